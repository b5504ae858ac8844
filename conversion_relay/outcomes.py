"""What one HTTP attempt at a vendor came to, and how failures are classed.

Adapters turn a response into one of four outcomes; the delivery engine alone decides what to do
with it (record, park for retry, split, dead-letter).  The classing of HTTP statuses lives here
once, so every vendor treats a 503 or a 401 the same way unless its adapter says otherwise.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from conversion_relay.masking import mask_personal

#: Per-part statuses that count as done and are never retried.
DONE_STATUSES = frozenset({"ok", "duplicate", "test_ok", "skipped"})
#: Statuses a retry cures: timeouts, throttling, early data, server errors.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
#: Longest response excerpt kept with a failure.
EXCERPT_CHARS = 300
#: How much of a body is read (and masked) per character of excerpt.
SCANNED_CHARS_PER_EXCERPT_CHAR = 8
#: What a cut leaves of the value it cut through: dropped, since half a value escapes masking.
_PARTIAL_WORD = re.compile(r"[^\s\"',;:{}\[\]()<>]*\Z")


class DeadLetterReason(StrEnum):
    """Why parts were dead-lettered: the ``reason`` of a dead letter, besides the family
    ``http_<status>`` (:class:`HttpReason`).  Operators filter replays and purges by these
    names, so a misspelt one must fail where it is written, not select nothing later."""

    #: One part is over the destination's request limit, alone (or the vendor said 413 to it).
    TOO_LARGE = "too_large"
    #: A 200 that refused some parts one by one (the vendor's message per part is kept).
    VENDOR_REJECTED_EVENT = "vendor_rejected_event"
    #: A 200 whose body refused the whole request (Tracify's ``success: false``).
    VENDOR_REFUSED = "vendor_refused"
    #: Transient failures until ``retry_horizon_seconds`` or ``max_attempts`` ran out.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: The adapter raised on a stored entry (kept as the entry, mapped again on replay).
    MAPPING_ERROR = "mapping_error"
    #: An entry handed out ``max_deliveries`` times without an outcome (a poison entry).
    REDELIVERED_TOO_OFTEN = "redelivered_too_often"


_HTTP_REASON = re.compile(r"http_([1-5][0-9][0-9])")


class HttpReason(str):
    """``http_<status>``: the vendor refused the request with that HTTP status for good (the
    family of reasons :func:`classify_failure` gives a 4xx).  Made by :func:`http_reason`."""

    __slots__ = ()

    def __new__(cls, text: str) -> HttpReason:
        if not isinstance(text, str) or not _HTTP_REASON.fullmatch(text):
            raise ValueError(f"reason: {text!r} is not http_<status> with a status of 100 to 599 (such as http_400).")
        return super().__new__(cls, text)

    @property
    def status(self) -> int:
        return int(self[len("http_") :])


#: A dead letter's reason: a fixed one, or ``http_<status>``.
Reason = DeadLetterReason | HttpReason

#: The valid reasons, as error messages and ``--help`` list them.
REASONS_HELP = ", ".join(["http_<status> (such as http_400)", *DeadLetterReason])


def http_reason(status: int) -> HttpReason:
    """The reason of a request the vendor refused with ``status``: ``http_401`` for 401."""
    return HttpReason(f"http_{status}")


def dead_letter_reason(text: str) -> Reason:
    """The reason ``text`` names, as stored or as an operator typed it.

    Raises:
        ValueError: no dead letter can have that reason; the message lists the valid ones.
    """
    if isinstance(text, DeadLetterReason | HttpReason):
        return text
    if isinstance(text, str):
        if _HTTP_REASON.fullmatch(text):
            return HttpReason(text)
        try:
            return DeadLetterReason(text)
        except ValueError:
            pass
    raise ValueError(f"reason: {text!r} is not a dead-letter reason; give one of: {REASONS_HELP}.")


_SKIP_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")


def skip_reason(text: str) -> str:
    """A skip reason as given: each vendor names its own (``no_client_ip``), but the name becomes
    a field of the stats hash (``skipped:<reason>``) and a word of ``status``, so it must be a
    short lower-case identifier.

    Raises:
        ValueError: not 1 to 64 lower-case letters, digits or underscores, starting with a letter.
    """
    if not isinstance(text, str) or not _SKIP_REASON.fullmatch(text):
        raise ValueError(
            f"skip reason: {text!r} is not a short identifier; use 1 to 64 lower-case letters, digits and "
            "underscores, starting with a letter (such as no_client_ip)."
        )
    return text


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
    """The vendor refused the request for good; sending it again cannot help.  ``reason`` is
    given as a :data:`Reason` or its name (checked: an unknown one raises ``ValueError``)."""

    reason: Reason
    status: int | None = None
    excerpt: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", dead_letter_reason(self.reason))


Outcome = Accepted | RetryLater | TooLarge | Rejected


def classify_failure(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Class a non-2xx response: transient, too large, or permanent."""
    excerpt = excerpt_of(body)
    if status in TRANSIENT_STATUSES or status >= 500:
        return RetryLater(
            reason=http_reason(status),
            status=status,
            retry_after_seconds=parse_retry_after(headers.get("Retry-After")),
            excerpt=excerpt,
        )
    if status == 413:
        return TooLarge(status=status, excerpt=excerpt)
    return Rejected(reason=http_reason(status), status=status, excerpt=excerpt)


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
    """The start of a response body, decoded leniently, for a dead letter or a log line.

    Vendors echo what they were sent, so e-mail addresses, phone numbers, IP addresses and
    anything like a key are masked (:func:`conversion_relay.masking.mask_personal`) before the excerpt
    is cut: a value cut in half would no longer be recognised.  Only the first
    ``SCANNED_CHARS_PER_EXCERPT_CHAR * limit`` characters are read, up to the last whole value.
    """
    if isinstance(body, bytes):
        body = body[: limit * SCANNED_CHARS_PER_EXCERPT_CHAR * 4]
        text = body.decode("utf-8", "replace")
    else:
        text = body
    scanned = text[: limit * SCANNED_CHARS_PER_EXCERPT_CHAR]
    masked = mask_personal(" ".join(scanned.split()))
    if len(scanned) < len(text):
        masked = _PARTIAL_WORD.sub("", masked).rstrip() + "…"
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"
