"""What one ``enqueue`` call may name and carry, checked before anything is stored.

- **Destinations**: each named once, configured and enabled (a disabled destination has no
  drain, so its events would wait forever).  Leaving ``destinations`` out means every enabled one.
- **The call**: one call is one Redis script, and Redis serves nothing else while it runs (one
  call of 20,000 events to four destinations held it for 368 ms).  It writes one stream entry per
  event and destination: at most :data:`MAX_CALL_ENTRIES` of them (some 3 us each, so 30 to
  50 ms), and at most :data:`MAX_CALL_BYTES` of encoded events counted once per destination.
- **Each event**: it must fit a request of every destination it is for, alone, as the drain
  would send it (the vendor's envelope and the event's parts, against ``max_bytes``), or the
  drain could only dead-letter it as ``too_large``.  No adapter makes the request for one event
  larger than :data:`REQUEST_GROWTH` times the stored event and :data:`REQUEST_SLACK` bytes
  (tests/test_limits.py checks every adapter on generated events; the largest growth measured is
  below 1x for large events), so the producer maps an event with the destination's adapter to
  measure it only when that bound passes ``max_bytes``: the rare large event, never the common
  small one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from conversion_relay.config.settings import Settings
from conversion_relay.errors import ConfigurationError, EventValidationError
from conversion_relay.vendors import VendorAdapter

#: Most stream entries (events x destinations) one call may write.
MAX_CALL_ENTRIES = 10_000
#: Most bytes one call may write: the encoded events, once per destination.
MAX_CALL_BYTES = 16_000_000
#: A request for one event is at most this many times the stored event, plus REQUEST_SLACK bytes.
REQUEST_GROWTH = 2
REQUEST_SLACK = 1024

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


class UnknownDestinationError(EventValidationError, ConfigurationError):
    """A destination named in the call is not configured.

    A bad argument of the call (every bad input of ``enqueue`` is an ``EventValidationError``)
    and a mismatch with the configuration, as it always was (a ``ConfigurationError``)."""


def resolve_targets(settings: Settings, destinations: Any, *, field: str = "destinations") -> tuple[str, ...]:
    """The destinations a call stores its events for (``field``: the argument that named them).

    Raises:
        EventValidationError: naming the problem under ``destinations``;
            :class:`UnknownDestinationError` when a name is not configured.
    """
    if destinations is None:
        names = tuple(d.name for d in settings.enabled_destinations)
        if not names:
            _refuse("No destination is enabled; set enabled = true in a [destinations.<name>] table.", field=field)
        return names
    if isinstance(destinations, str):
        destinations = [destinations]
    if not isinstance(destinations, (list, tuple)) or not all(isinstance(n, str) for n in destinations):
        _refuse(
            'Not a list of destination names; send e.g. ["gravity"], or leave it out for every enabled one.',
            field=field,
        )
    if not destinations:
        _refuse(
            "Empty: the events would be stored for no destination; name at least one, or leave "
            "destinations out for every enabled one.",
            field=field,
        )
    problems, unknown = [], False
    for index, name in enumerate(destinations):
        shown = repr(name) if _NAME.fullmatch(name) else f"destination {index} (not a destination name)"
        dest = settings.destinations.get(name)
        if name in destinations[:index]:
            problems.append(f"{shown} is named twice; name each destination once.")
        elif dest is None:
            unknown = True
            known = ", ".join(sorted(settings.destinations)) or "none"
            table = f"[destinations.{name}]" if _NAME.fullmatch(name) else "[destinations.<name>]"
            problems.append(f"{shown} is not configured (configured: {known}); add a {table} table to the settings.")
        elif not dest.enabled:
            problems.append(
                f"{shown} is disabled (enabled = false in [destinations.{name}]), so nothing would deliver "
                "its events; set enabled = true there, or leave it out of destinations."
            )
    if problems:
        raise (UnknownDestinationError if unknown else EventValidationError)({field: problems})
    return tuple(destinations)


def encode_events(events: list[dict[str, Any]], many: bool) -> list[bytes]:
    """The loaded events as stored (compact JSON), or an error naming the field JSON cannot carry."""
    encoded = []
    for index, event in enumerate(events):
        try:
            encoded.append(orjson.dumps(event))
        except orjson.JSONEncodeError:
            # conversion_relay.schemas.untrusted refuses what JSON cannot carry before the schema runs; should
            # anything slip through, the message still names the field it is in.
            bad = next((key for key, value in event.items() if not _encodes(value)), "_schema")
            where = {index: {bad: ["Cannot be written as JSON; send text, numbers, true, false, null, "
                                   "objects and lists only."]}}  # fmt: skip
            raise EventValidationError(where if many else where[index], many=many) from None
    return encoded


def _encodes(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def check_count(count: int, targets: Sequence[str], max_entries: int = MAX_CALL_ENTRIES) -> None:
    """Refuse a call that would write more than ``max_entries`` stream entries."""
    entries = count * len(targets)
    if entries > max_entries:
        per_call = max(1, max_entries // len(targets))
        _refuse(
            f"{count:,} events for {len(targets)} destinations are {entries:,} stream entries in one call; "
            f"at most {max_entries:,} (Redis runs a call as one command and serves nothing else meanwhile). "
            f"Split it into calls of at most {per_call:,} events.",
            field="events",
        )


def check_bytes(encoded: Sequence[bytes], targets: Sequence[str], max_bytes: int = MAX_CALL_BYTES) -> None:
    """Refuse a call that would write more than ``max_bytes`` bytes of events."""
    size = sum(map(len, encoded)) * len(targets)
    if size > max_bytes:
        _refuse(
            f"{len(encoded):,} events for {len(targets)} destinations are {size:,} bytes to store in one "
            f"call; at most {max_bytes:,}. Split it into smaller calls.",
            field="events",
        )


def check_event_sizes(
    settings: Settings,
    adapter: Callable[[str], VendorAdapter],
    targets: Sequence[str],
    encoded: Sequence[bytes],
    many: bool,
) -> None:
    """Refuse every event that no request of one of its destinations could carry."""
    errors: dict[Any, Any] = {}
    for name in targets:
        dest = settings.destination(name)
        for index, body in enumerate(encoded):
            if REQUEST_GROWTH * len(body) + REQUEST_SLACK <= dest.max_bytes or index in errors:
                continue
            event = orjson.loads(body)
            need = _request_bytes(adapter(name), event, dest.skip_events)
            if need > dest.max_bytes:
                largest = max(event, key=lambda key: len(orjson.dumps(event[key])))
                errors[index] = {
                    largest: [
                        f"The event is {len(body):,} bytes as stored; a request of destination {name!r} "
                        f"carrying it would be {need:,} bytes, above its max_bytes of {dest.max_bytes:,}. "
                        f"This field is the largest ({len(orjson.dumps(event[largest])):,} bytes): make it "
                        "smaller, or send the content as several events."
                    ]
                }
    if errors:
        raise EventValidationError(errors if many else errors[0], many=many)


def _request_bytes(adapter: VendorAdapter, event: dict[str, Any], skip_events: frozenset[str]) -> int:
    """Bytes of the largest request one of the event's parts needs alone: what the drain checks
    (``Batcher.fits_alone``) before it dead-letters a part as ``too_large``."""
    if event.get("event_name") in skip_events:
        return 0
    try:
        parts = adapter.map_event(event)
    except Exception:  # a mapping bug is the drain's to record (mapping_error), not the caller's
        return 0
    return max((adapter.envelope_size(part.group) + len(part.body) for part in parts), default=0)


def check_backlog_caps(settings: Settings, targets: Sequence[str], count: int) -> bool:
    """Refuse a call larger than a target's whole backlog cap (it could never be stored);
    return whether any target has several partitions (the events then need a hash)."""
    for name in targets:
        cap = settings.destination(name).max_backlog_events
        if 0 < cap < count:
            _refuse(
                f"{count} events in one call is more than destination {name!r} may hold "
                f"(max_backlog_events {cap}); send them in smaller calls.",
                field="_schema",
            )
    return any(settings.destination(n).parallel_drains > 1 for n in targets)


def _refuse(message: str, *, field: str = "destinations") -> None:
    raise EventValidationError({field: [message]})
