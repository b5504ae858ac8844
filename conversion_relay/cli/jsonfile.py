"""Reading event payloads from JSON text, with errors a person can act on.

``json`` reports where parsing stopped; the commonest hand-edit mistake, a comma before a
closing brace or bracket (JSON allows none), gets its own message.
"""

from __future__ import annotations

import json
from typing import Any

from conversion_relay.errors import RelayError


class PayloadParseError(RelayError, ValueError):
    """The text is not valid JSON; nothing was enqueued."""


def parse_json(text: str, source: str = "payload") -> Any:
    """Parse ``text`` or raise :class:`PayloadParseError` naming the line, column and likely cause,
    e.g. ``payload: not valid JSON at line 1, column 15: a trailing comma before ']'; remove it.``

    >>> parse_json('{"events": []}')
    {'events': []}
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadParseError(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {_cause(exc)}"
        ) from None


def _cause(exc: json.JSONDecodeError) -> str:
    before = exc.doc[: exc.pos].rstrip()
    after = exc.doc[exc.pos : exc.pos + 1]
    if before.endswith(",") and after in ("}", "]"):
        return f"a trailing comma before {after!r}; remove it."
    return f"{exc.msg}."
