"""The error tree of conversion-relay.

One root, :class:`RelayError`, so a caller can catch everything the relay raises on purpose
without catching programming errors.  Messages name the field or setting, say what is wrong and
what to do; they never carry an event payload or a secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class RelayError(Exception):
    """Root of every error conversion-relay raises on purpose."""


class ConfigurationError(RelayError):
    """The configuration file or environment is invalid; raised at start-up.

    Attributes:
        problems: one line per problem (``destinations.gravity.max_events: ...``), so that a
            report can list them; the message holds them all.
    """

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


class EventValidationError(RelayError, ValueError):
    """An event given to ``enqueue`` failed validation; nothing of the call was enqueued.

    Attributes:
        messages: marshmallow's error dict.  For a list, keyed by the index of each bad event,
            e.g. ``{3: {"user_data": {"em": {0: ["Not a valid email address."]}}}}``.
    """

    def __init__(self, messages: dict[Any, Any], *, many: bool = False) -> None:
        self.messages = messages
        self.many = many
        super().__init__(format_messages(messages, many=many))


class EnqueueError(RelayError):
    """Valid events could not be stored.

    Attributes:
        event_ids: the ``event_id`` of each event of the call, generated ones included.
        maybe_stored: ``True`` when Redis may have stored the events before the connection
            failed (a timeout).  Retry with the same ``event_id``s: the relay recognises the
            same call within ``enqueue_dedup_seconds`` and does not store it twice.
    """

    def __init__(self, message: str, *, event_ids: Sequence[str] = (), maybe_stored: bool = False) -> None:
        super().__init__(message)
        self.event_ids = list(event_ids)
        self.maybe_stored = maybe_stored


class BacklogFullError(EnqueueError):
    """Some destinations hold as many events as they may (``max_backlog_events``), or Redis is
    above its memory high-water mark; nothing was stored for them.

    Attributes:
        full: destination name → its backlog (events) at the time, for each refused one.
        stored_in: destinations that did store the events (the others of the call).
    """

    def __init__(
        self, message: str, *, full: Mapping[str, int], stored_in: Sequence[str], event_ids: Sequence[str] = ()
    ) -> None:
        super().__init__(message, event_ids=event_ids)
        self.full = dict(full)
        self.stored_in = tuple(stored_in)


class LeaseLost(RelayError):
    """A drain no longer owns its partition; it must neither send nor record anything."""


def format_messages(messages: dict[Any, Any], *, many: bool = False) -> str:
    """Flatten marshmallow's nested messages into ``event 3: user_data.em.0: ...`` lines."""
    lines: list[str] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + [str(key)])
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item, path)
        else:
            lines.append(_line(path, str(node), many))

    walk(messages, [])
    count = len(lines)
    head = f"{count} invalid field{'s' if count != 1 else ''}; nothing was enqueued."
    return "\n  ".join([head] + lines)


def _line(path: list[str], message: str, many: bool) -> str:
    if many and path:
        prefix = f"event {path[0]}"
        rest = ".".join(path[1:])
        return f"{prefix}: {rest}: {message}" if rest else f"{prefix}: {message}"
    return f"{'.'.join(path) or 'event'}: {message}"
