"""Records stored as Redis hashes (waiting batches, dead letters): each field declared once.

A record is a dataclass whose fields carry their :class:`Codec` (:func:`stored`); its
:class:`HashFormat` writes and reads the hash from that one declaration, and gives Lua scripts
the field names they use (:meth:`HashFormat.field`, :meth:`HashFormat.lua_hset`), so a script
that writes a whole record cannot leave a field out or add one the reader does not know.

The encodings are those the relay has always written (``str()`` of numbers, ``json.dumps`` of
lists and maps, ``""`` for "none"), so records written before stay readable.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from string import Template
from typing import Any, Generic, TypeVar

from conversion_relay.masking import mask_personal

T = TypeVar("T")


@dataclass(frozen=True)
class Codec:
    """How one field's value becomes the hash's text and back."""

    encode: Callable[[Any], str]
    decode: Callable[[str], Any]


TEXT = Codec(str, str)
INTEGER = Codec(str, int)
NUMBER = Codec(str, float)
#: An optional whole number (an HTTP status): ``""`` is none.
OPTIONAL_INTEGER = Codec(lambda v: "" if v is None else str(v), lambda s: int(s) if s else None)
#: A list of strings (a record's parts) as JSON.
TEXT_LIST = Codec(json.dumps, json.loads)
#: What a vendor said: masked here, as the last line before Redis, whichever adapter wrote it.
MASKED_TEXT = Codec(mask_personal, str)
#: A map of part index to what the vendor said about it, masked, as JSON.
MASKED_MESSAGES = Codec(
    lambda v: json.dumps({k: mask_personal(m) for k, m in v.items()}), lambda s: json.loads(s or "{}")
)


def lua(script: str, *fields: Iterable[str]) -> str:
    """A Lua script with each ``$name`` replaced by the quoted field name, for the fields of
    the formats given (:attr:`HashFormat.names`, :data:`conversion_relay.store.stats.FIELDS`).
    Called at import, so a script naming a field no format has fails there.

    Raises:
        ValueError: the script names a field none of ``fields`` has.
    """
    known = {name: f"'{name}'" for names in fields for name in names}
    try:
        return Template(script).substitute(known)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"a Lua script names field {exc}, which is not one of: {', '.join(known)}.") from None


_CODEC = "codec"
_ABSENT = "absent"


def stored(codec: Codec, *, absent: str | None = None, **options: Any) -> Any:
    """A dataclass field stored with ``codec``; ``absent`` is the text a hash without the field
    reads as (a field added after records were written), ``None`` if it must be there.
    ``options`` go to :func:`dataclasses.field` (``default``, ``default_factory``)."""
    return dataclasses.field(metadata={_CODEC: codec, _ABSENT: absent}, **options)


class HashFormat(Generic[T]):
    """The hash format of the record dataclass ``cls`` (every field declared with :func:`stored`)."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        undeclared = [f.name for f in fields if _CODEC not in f.metadata]
        if undeclared:
            raise TypeError(f"{cls.__name__}: fields {undeclared} have no codec; declare them with stored().")
        self._fields = {f.name: (f.metadata[_CODEC], f.metadata[_ABSENT]) for f in fields}

    @property
    def names(self) -> tuple[str, ...]:
        """The hash's fields, in declaration order."""
        return tuple(self._fields)

    def field(self, name: str) -> str:
        """``name``, checked to be one of the hash's fields (for scripts and single-field reads).

        Raises:
            KeyError: not a field of the record.
        """
        if name not in self._fields:
            raise KeyError(f"{self.cls.__name__} has no field {name!r}; its fields: {', '.join(self._fields)}.")
        return name

    def encode(self, name: str, value: Any) -> str:
        """One field's stored text (a script that rewrites that field alone)."""
        return self._fields[self.field(name)][0].encode(value)

    def decode(self, name: str, text: bytes | str | None) -> Any:
        """One field's value from its stored text (``None``: absent)."""
        codec, absent = self._fields[self.field(name)]
        if text is None:
            if absent is None:
                raise KeyError(f"{self.cls.__name__}: the stored hash has no {name!r}")
            text = absent
        return codec.decode(text.decode() if isinstance(text, bytes) else text)

    def to_hash(self, record: T) -> dict[str, str]:
        return {name: codec.encode(getattr(record, name)) for name, (codec, _) in self._fields.items()}

    def from_hash(self, raw: Mapping[bytes, bytes]) -> T:
        """The record; fields the format does not know (``claimed_until``, which scripts keep in
        a waiting batch's hash) are left out."""
        data = {k.decode(): v for k, v in raw.items()}
        try:
            return self.cls(**{name: self.decode(name, data.get(name)) for name in self._fields})
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]}: not a whole {self.cls.__name__} record") from None

    def lua_hset(self, key: str, values: Mapping[str, str]) -> str:
        """The Lua ``HSET`` of a whole record at ``key``, ``values`` giving the Lua expression of
        every field's text.

        Raises:
            ValueError: ``values`` leaves out a field or names one the record does not have.
        """
        missing, extra = set(self._fields) - set(values), set(values) - set(self._fields)
        if missing or extra:
            raise ValueError(
                f"{self.cls.__name__} in a Lua script: missing fields {sorted(missing)}, unknown {sorted(extra)}."
            )
        pairs = ", ".join(f"'{name}', {values[name]}" for name in self._fields)
        return f"redis.call('HSET', {key}, {pairs})"
