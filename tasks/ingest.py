"""``relay.enqueue``: the producer API for apps that are not written in Python.

Any Celery client can send it (JSON serialisation)::

    task name:  relay.enqueue          queue: relay.ingest
    args:       [events]               events: one canonical event object or a list of them
    kwargs:     {"destinations": ["gravity"]}   optional; all enabled destinations if absent

    task name:  relay.enqueue_native   queue: relay.ingest
    args:       [destination, payload] a request body or item as the vendor documents it
    kwargs:     {"operation": "addItems"}       where the vendor has several calls (RECO)

Messages from other apps are not trusted: the task validates and hashes exactly as the Python
producer does before anything reaches a destination stream.  Because the message itself sits in
the broker, such producers must hash e-mail, phone and names themselves (SHA-256 hex of the
normalised value, see ``docs/producer.md``); plaintext that still arrives is hashed here.
"""

from __future__ import annotations

import logging
from typing import Any

from conversion_relay.producer import Relay
from worker.app import app
from worker.errors import EnqueueError, EventValidationError

log = logging.getLogger("conversion_relay.ingest")

_relay: Relay | None = None


def _producer() -> Relay:
    global _relay
    if _relay is None:
        _relay = Relay(app.relay_settings)
    return _relay


@app.task(name="relay.enqueue", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def enqueue(self: Any, events: Any, destinations: list[str] | None = None) -> dict[str, Any]:
    try:
        ids = _producer().enqueue(events, destinations=destinations)
    except EventValidationError as exc:
        log.warning("relay.enqueue %s rejected: %s", self.request.id, exc)
        return {"accepted": 0, "errors": exc.messages}
    except EnqueueError as exc:
        raise self.retry(exc=exc, countdown=5) from None
    return {"accepted": len(ids), "event_ids": ids}


@app.task(name="relay.enqueue_native", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def enqueue_native(self: Any, destination: str, payload: Any, operation: str | None = None) -> dict[str, Any]:
    """A vendor-native payload for one destination (see ``Relay.enqueue_native``)."""
    try:
        count = _producer().enqueue_native(destination, payload, operation=operation)
    except EventValidationError as exc:
        log.warning("relay.enqueue_native %s for %s rejected: %s", self.request.id, destination, exc)
        return {"accepted": 0, "errors": exc.messages}
    except EnqueueError as exc:
        raise self.retry(exc=exc, countdown=5) from None
    return {"accepted": count}
