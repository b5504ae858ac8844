"""conversion-relay: deliver server-side conversion events to vendors through Celery and Redis.

>>> from conversion_relay import Relay
>>> Relay().enqueue({"event_name": "Purchase", "custom_data": {"value": 10, "currency": "EUR"}})
"""

from conversion_relay.client.aio import AsyncRelay
from conversion_relay.client.producer import Relay
from conversion_relay.errors import BacklogFullError, ConfigurationError, EnqueueError, EventValidationError, RelayError
from conversion_relay.version import __version__

__all__ = [
    "__version__",
    "Relay",
    "AsyncRelay",
    "RelayError",
    "ConfigurationError",
    "EnqueueError",
    "BacklogFullError",
    "EventValidationError",
]
