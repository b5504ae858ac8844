"""Reading what an operator typed into the console's filter and action forms.

The values become a :class:`~conversion_relay.store.selection.Selection`, whose checks are
the command line's and the Celery task's; only the time fields are read here, in the forms the
command line takes (ISO 8601, UNIX seconds or an age such as ``2h``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conversion_relay.store.selection import InvalidSelection, Selection, parse_when

#: The filter fields of the dead-letter list, export, replay and purge, in the order shown.
FILTERS = ("destination", "reason", "since", "until")
#: Entries one page lists; counts and actions cover every match.
PAGE_SIZE = 200


def parse_time(name: str, text: str, now: float | None = None) -> float:
    """A point in time as the command line reads it; the message names the form field.

    Raises:
        InvalidSelection: none of the accepted forms.
    """
    try:
        return parse_when(text, now)
    except InvalidSelection as exc:
        raise InvalidSelection(f"{name}: {exc}") from None


def filters_of(fields: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The non-empty filter fields, as typed (for links and hidden fields)."""
    chosen = {}
    for name in FILTERS:
        value = (fields.get(name) or [""])[0].strip()
        if value:
            chosen[name] = value
    return chosen


def selection_of(fields: Mapping[str, Sequence[str]], *, limit: int | None = None) -> Selection:
    """The selection a form makes: its ``id`` fields and its filters.

    Raises:
        InvalidSelection: a field that cannot be read, with what to give instead.
    """
    chosen = filters_of(fields)
    ids = tuple(i.strip() for i in fields.get("id", ()) if i.strip())
    return Selection(
        ids=ids,
        destination=chosen.get("destination"),
        reason=chosen.get("reason"),
        since=parse_time("since", chosen["since"]) if "since" in chosen else None,
        until=parse_time("until", chosen["until"]) if "until" in chosen else None,
        limit=limit,
    )
