"""Checks of an event as it arrives, before the schema reads its fields.

The schema checks the fields it declares; these checks cover the whole value, the pass-through
``client_context`` included, because everything in it is stored in Redis and sent on:

- nesting is bounded (:data:`MAX_DEPTH`), so neither the schema, the encoder nor a vendor
  mapping recurses without bound (1,000 levels used to raise ``RecursionError``);
- every value is of a JSON type, every number finite and within the 64-bit range the encoder
  writes (NaN used to be stored as null), every string and key text that UTF-8 can carry (no
  lone surrogates);
- no string or key anywhere looks like an e-mail address, except in ``user_data.em``, ``ph``,
  ``fn`` and ``ln``, which are hashed;
- no object in ``client_context`` has a key naming personal data (:data:`conversion_relay.schemas.pii.PERSONAL_KEYS`).

Messages are keyed like marshmallow's, so each problem is reported under its own field.  A key
that must not be shown (not text, or an e-mail address) appears as ``<key N>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conversion_relay.schemas.pii import PERSONAL_KEYS, key_name, looks_like_email

#: Most levels of objects and lists in an event, the event itself counted as one
#: (``client_context.screen`` is level 3).
MAX_DEPTH = 16
#: What the JSON encoder (orjson) writes: signed or unsigned 64-bit integers.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: ``user_data`` members holding plaintext that the schema hashes.
HASHED_FIELDS = frozenset({"em", "ph", "fn", "ln"})

_PLAIN, _USER_DATA, _HASHED, _CONTEXT = range(4)
#: Keys shown in messages as they are: field-like names.  Other keys (an address, a phone
#: number, anything odd) are shown as ``<key N>``.
_SHOWN_KEY = re.compile(r"(?!.*\d{7})[A-Za-z_$][A-Za-z0-9_.$-]{0,63}|<key \d+>|_schema")


@dataclass
class Findings:
    """Problems found, as marshmallow-shaped messages.  ``fatal`` ones (wrong types, depth,
    numbers or text JSON cannot carry) are reported alone: the schema is not run on such input."""

    problems: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)
    fatal: bool = False

    def add(self, path: tuple[Any, ...], message: str, *, fatal: bool) -> None:
        self.problems.append((path, message))
        self.fatal = self.fatal or fatal

    def messages(self, besides: Mapping[Any, Any] | None = None) -> dict[Any, Any]:
        """The problems as nested messages, merged into ``besides`` (the schema's); a problem at
        a field the schema refused already is left out: one reason per field is enough."""
        tree: dict[Any, Any] = _copy(besides or {})
        for path, message in self.problems:
            if besides and _reported(besides, path):
                continue
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node.setdefault(path[-1], []).append(message)
        return tree


def check(data: Any, *, many: bool) -> Findings:
    """Findings for one event (a mapping) or, with ``many``, a list of events.  Anything else is
    left to the schema, which refuses it."""
    findings = Findings()
    if many:
        if isinstance(data, (list, tuple)):
            for index, event in enumerate(data):
                if isinstance(event, Mapping):
                    _object(findings, event, (index,), 1, _PLAIN, top=True)
    elif isinstance(data, Mapping):
        _object(findings, data, (), 1, _PLAIN, top=True)
    return findings


def check_json(value: Any) -> Findings:
    """Findings for a vendor-native payload: JSON types, numbers, text and depth (as for an
    event) but no e-mail rule, since native payloads carry plaintext their adapters hash."""
    findings = Findings()
    _value(findings, value, (), 1, _HASHED)
    return findings


def shown(messages: Any) -> Any:
    """Messages whose keys can be shown to anyone: an unknown key that is not a field-like name
    (it may be an e-mail address or a phone number) becomes ``<key N>``."""
    if not isinstance(messages, Mapping):
        return messages
    out: dict[Any, Any] = {}
    hidden = 0
    for key, value in messages.items():
        if not (isinstance(key, int) or (isinstance(key, str) and _SHOWN_KEY.fullmatch(key))):
            hidden += 1
            key = f"<key {hidden}>"
        out[key] = shown(value)
    return out


def _object(findings: Findings, value: Mapping[Any, Any], path: tuple[Any, ...], depth: int, where: int,
            *, top: bool = False) -> None:  # fmt: skip
    hidden = 0
    for key, member in value.items():
        if not isinstance(key, str) or not _is_text(key) or looks_like_email(key):
            # Fatal: the schema would name the key in its own message.
            hidden += 1
            findings.add(path + (f"<key {hidden}>",), _key_problem(key), fatal=True)
            continue
        if where == _CONTEXT and key_name(key) in PERSONAL_KEYS:
            findings.add(
                path + (key,),
                "Personal data is not passed through client_context; send e-mail, phone and names in "
                "user_data.em, ph, fn and ln (they are hashed there) or leave them out.",
                fatal=False,
            )
            continue
        if _fine(member):
            continue
        inner = where
        if top:
            inner = _CONTEXT if key == "client_context" else _USER_DATA if key == "user_data" else _PLAIN
        elif where == _USER_DATA:
            inner = _HASHED if key in HASHED_FIELDS else _PLAIN
        _value(findings, member, path + (key,), depth + 1, inner)


def _value(findings: Findings, value: Any, path: tuple[Any, ...], depth: int, where: int) -> None:
    if isinstance(value, str):
        if not _is_text(value):
            findings.add(path, "Not valid Unicode text (it holds a lone surrogate); send UTF-8 text.", fatal=True)
        elif where != _HASHED and looks_like_email(value):
            findings.add(
                path,
                "Looks like an e-mail address; plaintext e-mail is taken only in user_data.em, where it is "
                "hashed: move it there or leave it out.",
                fatal=False,
            )
    elif value is None or isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            findings.add(path, "Integer out of the 64-bit range; send a smaller number, or text.", fatal=True)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            findings.add(path, "Not a finite number (NaN or Infinity, which JSON cannot carry); send a number.",
                         fatal=True)  # fmt: skip
    elif isinstance(value, (dict, list, tuple)):
        if depth > MAX_DEPTH:
            findings.add(
                path,
                f"Nested deeper than {MAX_DEPTH} levels of objects and lists (the event is level 1); flatten it.",
                fatal=True,
            )
        elif isinstance(value, dict):
            _object(findings, value, path, depth, where)
        else:
            for index, item in enumerate(value):
                if not _fine(item):
                    _value(findings, item, path + (index,), depth + 1, where)
    else:
        findings.add(
            path,
            f"Not a JSON value ({type(value).__name__}); send text, a number, true, false, null, an object or a list.",
            fatal=True,
        )


def _fine(value: Any) -> bool:
    """A scalar that passes every check, found without building its path (most values are)."""
    kind = type(value)
    if kind is str:
        return value.isascii() and "@" not in value and "%" not in value
    if kind is int:
        return INT_MIN <= value <= INT_MAX
    if kind is float:
        return value - value == 0.0  # false for NaN and the infinities
    return value is None or kind is bool


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key_problem(key: Any) -> str:
    if not isinstance(key, str):
        return f"A key that is not text ({type(key).__name__}); JSON object keys are strings."
    if not _is_text(key):
        return "A key that is not valid Unicode text (it holds a lone surrogate); send UTF-8 text."
    return "A key that looks like an e-mail address; plaintext e-mail is taken only in user_data.em."


def _reported(messages: Mapping[Any, Any], path: tuple[Any, ...]) -> bool:
    node: Any = messages
    for key in path:
        if not isinstance(node, Mapping):
            return True  # the schema refused a field that holds this one
        if key not in node:
            return False
        node = node[key]
    return True


def _copy(messages: Mapping[Any, Any]) -> dict[Any, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else list(v) if isinstance(v, list) else v
            for k, v in messages.items()}  # fmt: skip
