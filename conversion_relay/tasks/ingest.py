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
import uuid
from collections.abc import Mapping
from typing import Any

from conversion_relay.client.producer import Relay
from conversion_relay.errors import BacklogFullError, EnqueueError, EventValidationError
from conversion_relay.schemas.untrusted import shown
from conversion_relay.worker.app import app

log = logging.getLogger("conversion_relay.ingest")

_relay: Relay | None = None


def _producer() -> Relay:
    global _relay
    if _relay is None:
        _relay = Relay(app.relay_settings)
    return _relay


def with_fixed_ids(events: Any, task_id: str | None) -> Any:
    """Give every event without an ``event_id`` one derived from the task id and its index.

    A retry of the task, or the broker handing its message out again after a worker died,
    then enqueues the very same ids, which the relay recognises as the same call (and vendors
    as the same events) instead of generating new ones.
    """

    task_id = task_id or uuid.uuid4().hex  # called directly, not as a task: ids of its own

    def fixed(event: Any, index: int) -> Any:
        if isinstance(event, Mapping) and event.get("event_id") in (None, ""):
            return {**event, "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay.enqueue:{task_id}:{index}"))}
        return event

    if isinstance(events, Mapping):
        return fixed(events, 0)
    if isinstance(events, list):
        return [fixed(event, index) for index, event in enumerate(events)]
    return events


def unexpected_arguments(extra: tuple[Any, ...], unknown: dict[str, Any], takes: str) -> EventValidationError | None:
    """The error for arguments a message should not carry (any client can send any), or None.

    Refused like an invalid event, not left to fail as a ``TypeError`` in the worker, so the
    sender's log line says what the task takes."""
    if not extra and not unknown:
        return None
    problems: dict[str, Any] = {}
    if extra:
        problems["args"] = [f"{len(extra)} argument(s) too many; the task takes {takes}."]
    for key in unknown:
        problems[key] = [f"Unknown keyword argument; the task takes {takes}."]
    return EventValidationError(shown(problems))


@app.task(name="relay.enqueue", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def enqueue(self: Any, events: Any = None, destinations: Any = None, *extra: Any, **unknown: Any) -> dict[str, Any]:
    events = with_fixed_ids(events, self.request.id)
    try:
        refused = unexpected_arguments(extra, unknown, 'args [events] and kwargs {"destinations": [...]}')
        if refused:
            raise refused
        ids = _producer().enqueue(events, destinations=destinations)
    except EventValidationError as exc:
        log.warning("relay.enqueue %s rejected: %s", self.request.id, exc)
        return {"accepted": 0, "errors": exc.messages}
    except BacklogFullError as exc:
        # Retry for the full destinations only: a full destination may stay full for longer than
        # the others remember this call (enqueue_dedup_seconds).
        retry_for = list(exc.full) if exc.stored_in else destinations
        raise self.retry(exc=exc, countdown=5, args=[events], kwargs={"destinations": retry_for}) from None
    except EnqueueError as exc:  # the same call again stores only where it is missing
        raise self.retry(exc=exc, countdown=5, args=[events], kwargs={"destinations": destinations}) from None
    return {"accepted": len(ids), "event_ids": ids}


@app.task(name="relay.enqueue_native", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def enqueue_native(
    self: Any, destination: Any = None, payload: Any = None, operation: Any = None, *extra: Any, **unknown: Any
) -> dict[str, Any]:
    """A vendor-native payload for one destination (see ``Relay.enqueue_native``)."""
    try:
        refused = unexpected_arguments(extra, unknown, 'args [destination, payload] and kwargs {"operation": ...}')
        if refused:
            raise refused
        if operation is not None and not isinstance(operation, str):
            raise EventValidationError({"operation": ["Not a string; name the vendor call, e.g. 'addItems'."]})
        count = _producer().enqueue_native(destination, payload, operation=operation)
    except EventValidationError as exc:
        named = isinstance(destination, str) and destination in _producer().settings.destinations
        known = destination if named else "an unknown destination"
        log.warning("relay.enqueue_native %s for %s rejected: %s", self.request.id, known, exc)
        return {"accepted": 0, "errors": exc.messages}
    except EnqueueError as exc:
        raise self.retry(exc=exc, countdown=5) from None
    return {"accepted": count}
