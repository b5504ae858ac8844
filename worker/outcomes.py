"""What one HTTP attempt at a vendor came to, and how failures are classed.

Adapters turn a response into one of four outcomes; the delivery engine alone decides what to do
with it (record, park for retry, split, dead-letter).  The classing of HTTP statuses lives here
once, so every vendor treats a 503 or a 401 the same way unless its adapter says otherwise.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Per-part statuses that count as done and are never retried.
DONE_STATUSES = frozenset({"ok", "duplicate", "test_ok", "skipped"})
#: Statuses a retry cures: timeouts, throttling, early data, server errors.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
#: Longest response excerpt kept with a failure.
EXCERPT_CHARS = 300


@dataclass(frozen=True)
class Accepted:
    """The vendor took the request.  ``statuses[i]`` is the result of part ``i``.

    ``errors`` maps the index of each part the vendor refused to the vendor's message; those
    parts alone are dead-lettered.
    """

    statuses: list[str]
    errors: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryLater:
    """The attempt failed in a way that a later attempt may not."""

    reason: str
    status: int | None = None
    retry_after_seconds: float | None = None
    excerpt: str = ""


@dataclass(frozen=True)
class TooLarge:
    """The vendor refused the request for its size (HTTP 413); smaller requests may pass."""

    status: int = 413
    excerpt: str = ""


@dataclass(frozen=True)
class Rejected:
    """The vendor refused the request for good; sending it again cannot help."""

    reason: str
    status: int | None = None
    excerpt: str = ""


Outcome = Accepted | RetryLater | TooLarge | Rejected


def classify_failure(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Class a non-2xx response: transient, too large, or permanent."""
    excerpt = excerpt_of(body)
    if status in TRANSIENT_STATUSES or status >= 500:
        return RetryLater(
            reason=f"http_{status}",
            status=status,
            retry_after_seconds=parse_retry_after(headers.get("Retry-After")),
            excerpt=excerpt,
        )
    if status == 413:
        return TooLarge(status=status, excerpt=excerpt)
    return Rejected(reason=f"http_{status}", status=status, excerpt=excerpt)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    >>> parse_retry_after("120")
    120.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def excerpt_of(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """The start of a response body, decoded leniently, for a dead letter or a log line."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
