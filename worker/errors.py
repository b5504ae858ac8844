"""The error tree of conversion-relay.

One root, :class:`RelayError`, so a caller can catch everything the relay raises on purpose
without catching programming errors.  Messages name the field or setting, say what is wrong and
what to do; they never carry an event payload or a secret.
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Root of every error conversion-relay raises on purpose."""


class ConfigurationError(RelayError):
    """The configuration file or environment is invalid; raised at start-up."""


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
    """Valid events could not be stored (Redis unreachable); nothing of the call was enqueued."""


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
