"""conversion-relay: deliver server-side conversion events to vendors through Celery and Redis.

>>> from conversion_relay import Relay
>>> Relay().enqueue({"event_name": "Purchase", "custom_data": {"value": 10, "currency": "EUR"}})
"""

from conversion_relay.producer import Relay
from worker.errors import BacklogFullError, ConfigurationError, EnqueueError, EventValidationError, RelayError

__all__ = ["Relay", "RelayError", "ConfigurationError", "EnqueueError", "BacklogFullError", "EventValidationError"]
__version__ = "0.1.0"
