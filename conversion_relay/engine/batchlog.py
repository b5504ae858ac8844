"""The batch-outcome log line: one per attempt's outcome, fields only, never a payload.

Operators grep or index these (``relay.log_format``: ``key=value`` text, or JSON through
:class:`conversion_relay.worker.observability.JsonFormatter`, which reads ``relay_fields``).
The vendor's words are left out too: an excerpt may quote an event.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from conversion_relay.outcomes import Accepted, DeadLetterReason, Outcome, RetryLater
from conversion_relay.vendors.batching import Chunk

#: The delivery engine's logger: the batch lines sit among its other lines.
log = logging.getLogger("conversion_relay.delivery")


def outcome_kind(outcome: Outcome, dead_reasons: Collection[str]) -> str:
    """``accepted``, ``retry`` or ``dead_letter``; ``dead_reasons``: what the commit dead-lettered
    (a transient failure past its horizon is dead-lettered, not retried)."""
    if isinstance(outcome, Accepted):
        return "accepted"
    if isinstance(outcome, RetryLater) and DeadLetterReason.RETRIES_EXHAUSTED not in dead_reasons:
        return "retry"
    return "dead_letter"


def batch_fields(
    destination: str, chunk: Chunk, outcome: Outcome, *, request_ms: int, http_status: int | None, kind: str
) -> dict[str, Any]:
    """The line's fields: names, counts, status, attempt and time.  ``request_ms`` is 0 and
    ``http_status`` None for parts that never left; the status is then the reason."""
    reason = "" if isinstance(outcome, Accepted) else str(getattr(outcome, "reason", DeadLetterReason.TOO_LARGE))
    status = getattr(outcome, "status", None) or http_status
    fields: dict[str, Any] = {
        "destination": destination,
        "events": len(chunk.parts),
        "bytes": chunk.size or sum(map(len, chunk.parts)),
        "status": status if status is not None else reason or "none",
        "attempt": chunk.attempts + 1,
        "duration_ms": request_ms,
        "outcome": kind,
    }
    if isinstance(outcome, Accepted):
        if outcome.errors:
            fields["refused"] = len(outcome.errors)
    elif kind == "dead_letter" and isinstance(outcome, RetryLater):
        fields["reason"] = DeadLetterReason.RETRIES_EXHAUSTED.value
        fields["last_reason"] = reason
    else:
        fields["reason"] = reason
    return fields


def log_batch(fields: dict[str, Any]) -> None:
    log.info("batch %s", " ".join(f"{key}={value}" for key, value in fields.items()), extra={"relay_fields": fields})
