"""Who an erasure is for, and which stored events are theirs.

The person is named by e-mail, phone or external id and kept as stored: e-mail and phone hashed
exactly as the producer hashes them (:mod:`conversion_relay.schemas.pii`; a digest given passes unchanged), so an
erasure compares digests with digests and never keeps the values themselves.  A stored event, a
native item or a vendor payload is theirs when one of these values sits where a vendor carries
the person: ``user_data.em``/``ph``/``external_id`` (canonical events, and vendors that keep
that shape), or wherever a vendor's adapter says its payloads carry the person
(:meth:`~conversion_relay.vendors.VendorAdapter.person_values`), including what a vendor is sent
in place of the digests (:meth:`~conversion_relay.vendors.VendorAdapter.person_aliases`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from conversion_relay.schemas import pii
from conversion_relay.store.selection import InvalidSelection
from conversion_relay.vendors import adapter_classes


@dataclass(frozen=True)
class Person:
    """Whom an erasure is for, as stored: SHA-256 digests of e-mail and phone, the external id."""

    email: str | None = None
    phone: str | None = None
    external_id: str | None = None

    @property
    def kinds(self) -> list[str]:
        """Which identifiers were given (for the audit line; never their values)."""
        return [name for name in ("email", "phone", "external_id") if getattr(self, name)]

    @property
    def needles(self) -> frozenset[str]:
        """Every stored value that names this person."""
        found = {v for v in (self.email, self.phone, self.external_id) if v}
        for adapter in adapter_classes().values():
            found.update(adapter.person_aliases(self.email, self.phone, self.external_id))
        return frozenset(found)


def person(
    *, email: str | None = None, phone: str | None = None, external_id: str | None = None, region: str | None = None
) -> Person:
    """The person as stored, hashed as the producer hashes (a digest given passes unchanged).

    Raises:
        InvalidSelection: nothing given, or a value that cannot be read (the message names the
            field, never the value).
    """
    if not (email or phone or external_id):
        raise InvalidSelection("erase: give the person's email, phone or external_id (any of them).")
    hashed: dict[str, str | None] = {"email": None, "phone": None, "external_id": None}
    if email:
        try:
            hashed["email"] = pii.hash_email(_text("email", email))
        except pii.PIIError as exc:
            raise InvalidSelection(f"email: {exc}") from None
    if phone:
        try:
            hashed["phone"] = pii.hash_phone(_text("phone", phone), region)
        except pii.PIIError as exc:
            raise InvalidSelection(f"phone: {exc}") from None
    if external_id:
        hashed["external_id"] = _text("external_id", external_id).strip()
    return Person(**hashed)


def _text(name: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and name == "external_id":
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidSelection(f"{name}: give it as a non-empty string.")
    return value


def identities(document: Any, group: str = "") -> set[str]:
    """Values naming a person in a stored event, a native item or a vendor payload, and in its
    request group (a vendor may group requests by an envelope that names the user)."""
    found: set[str] = set()
    _walk(document, found, 0)
    if "{" in group:
        try:
            _walk(orjson.loads(group[group.index("{") :]), found, 0)
        except orjson.JSONDecodeError:
            pass
    return found


def _walk(node: Any, found: set[str], depth: int) -> None:
    if depth > 10:
        return
    if isinstance(node, list):
        for item in node:
            _walk(item, found, depth + 1)
        return
    if not isinstance(node, dict):
        return
    user_data = node.get("user_data")
    if isinstance(user_data, dict):
        for key in ("em", "ph", "external_id"):
            _add(user_data.get(key), found)
    for adapter in adapter_classes().values():
        for value in adapter.person_values(node):
            _add(value, found)
    for value in node.values():
        if isinstance(value, dict | list):
            _walk(value, found, depth + 1)


def _add(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        found.add(value.strip())
    elif isinstance(value, list):
        for item in value:
            _add(item, found)
    elif isinstance(value, int) and not isinstance(value, bool):
        found.add(str(value))


def is_theirs(body: bytes | str, needles: frozenset[str], group: str = "") -> bool:
    """Whether a stored event, native item or vendor part (JSON) belongs to the person."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return not needles.isdisjoint(identities(document, group))
