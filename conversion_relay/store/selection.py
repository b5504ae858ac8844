"""Which dead letters an operator's operation applies to, checked once for every front end.

The ``relay.admin`` task, the command line and any future console build a :class:`Selection`
from what the operator typed; the checks live here so that none of them can forget one.  A
nonsense value (a limit of 0, an unknown type, a reason no dead letter can have, ``since`` after
``until``) is refused with a
message naming the field, what is wrong and what to give instead -- ``limit=0`` once purged
one entry.  Destructive operations additionally need :meth:`Selection.require_target`: ids, a
filter, or ``everything=True`` -- an empty selection is never taken to mean "all" by itself.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from dataclasses import dataclass

from conversion_relay.outcomes import Reason, dead_letter_reason

#: Characters an ``origin`` label (who asked, for the audit line) may hold.
_ORIGIN = re.compile(r"[A-Za-z0-9_.:@/ -]{1,64}")
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TIME_FORMS = "use ISO 8601 (2026-11-23T10:00:00Z), UNIX seconds or an age like 2h"


class InvalidSelection(ValueError):
    """An operator's request that cannot be carried out as given; the message says why and what
    to give instead, and never repeats a personal value."""


def parse_when(text: str, now: float | None = None) -> float:
    """A point in time, as an operator types ``since`` or ``until``: ISO 8601 (UTC when it has
    no offset), UNIX seconds, or an age (``2h`` = two hours ago).

    Raises:
        InvalidSelection: saying which forms are accepted; also for ``nan`` and ``inf``, which
            ``float`` takes but which select nothing or everything without saying so.

    >>> parse_when("90m", now=10_000.0)
    4600.0
    """
    text = text.strip()
    age = _AGE.match(text)
    if age:
        return (time.time() if now is None else now) - float(age.group(1)) * _UNIT_SECONDS[age.group(2)]
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise InvalidSelection(f"{text!r} is not a point in time; {_TIME_FORMS}.")
        return seconds
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSelection(f"{text[:40]!r} is not a time; {_TIME_FORMS}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operation applies to.

    ``ids`` picks entries by id; ``destination``, ``reason`` (a
    :data:`~conversion_relay.outcomes.Reason` or its name), ``since`` and ``until`` (epoch
    seconds of the last failure) filter; ``limit`` caps how many (1 or more).  ``everything``
    says that a selection without ids or filters really means every entry -- destructive
    operations refuse an unfiltered selection without it.
    """

    ids: tuple[str, ...] = ()
    destination: str | None = None
    reason: Reason | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None
    everything: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.ids, str) or not isinstance(self.ids, tuple | list):
            raise InvalidSelection("ids: give a list of dead-letter ids, not a single string.")
        if not all(isinstance(i, str) and i for i in self.ids):
            raise InvalidSelection("ids: every dead-letter id must be a non-empty string.")
        object.__setattr__(self, "ids", tuple(self.ids))
        for name in ("destination", "reason"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidSelection(f"{name}: give a non-empty name, or leave it out to match any.")
        if self.reason is not None:
            try:
                object.__setattr__(self, "reason", dead_letter_reason(self.reason))
            except ValueError as exc:
                raise InvalidSelection(f"{exc} Leave it out to match any.") from None
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise InvalidSelection(f"{name}: give a time in UNIX seconds (a number), or leave it out.")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidSelection(f"since: {self.since} is after until ({self.until}); swap them, or drop one.")
        if self.limit is not None:
            if isinstance(self.limit, bool) or not isinstance(self.limit, int):
                raise InvalidSelection("limit: give a whole number of entries, 1 or more, or leave it out for all.")
            if self.limit < 1:
                raise InvalidSelection(
                    f"limit: {self.limit} entries selects nothing sensible; give 1 or more, or leave it out for all."
                )
        if not isinstance(self.everything, bool):
            raise InvalidSelection("all: give true or false.")

    @property
    def is_everything(self) -> bool:
        """No ids and no filter: the selection matches every entry."""
        return not (self.ids or self.destination or self.reason or self.since or self.until)

    def require_target(self, action: str) -> None:
        """Refuse a destructive ``action`` on an unfiltered selection not marked ``everything``.

        Raises:
            InvalidSelection: neither ids, a filter, nor ``everything`` was given.
        """
        if self.is_everything and not self.everything:
            raise InvalidSelection(
                f"{action}: no ids and no filter given; name dead-letter ids, filter by destination, reason, "
                f"since or until, or pass all=true (--all) to {action} every dead letter."
            )

    def describe(self) -> str:
        """The selection for an audit line: filters and the number of ids, never the entries."""
        words = []
        if self.ids:
            words.append(f"{len(self.ids)} ids")
        for name in ("destination", "reason", "since", "until", "limit"):
            value = getattr(self, name)
            if value is not None:
                words.append(f"{name}={value}")
        if self.is_everything:
            words.append("all")
        return " ".join(words)


def check_origin(origin: str) -> str:
    """The ``origin`` label of an operation (``cli``, ``api``, ``celery``, ``console:alice``).

    Raises:
        InvalidSelection: not a short label.
    """
    if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
        raise InvalidSelection(
            "origin: give a short label (at most 64 letters, digits, spaces or _.:@/-), "
            "such as 'cli' or 'console:alice'."
        )
    return origin
