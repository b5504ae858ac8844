"""marshmallow fields shared by the event schemas.

Each field checks one kind of value, normalises it to the form vendors want and, for personal
data, hashes it.  Error messages say what is wrong and what to send instead; they never repeat
the value, which may be personal data.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import math
import time
from importlib import resources
from typing import Any

from marshmallow import Schema, ValidationError, fields

from conversion_relay.schemas import pii

#: Events stamped further in the future than this are refused (clock skew allowance).
MAX_FUTURE_SKEW_SECONDS = 600
#: Identifiers longer than this are refused; vendors key dedup on them.
MAX_IDENTIFIER_CHARS = 256


@functools.cache
def currency_codes() -> frozenset[str]:
    """Active ISO 4217 codes, from ``conversion_relay/schemas/data/iso4217.json``."""
    text = resources.files("conversion_relay.schemas").joinpath("data/iso4217.json").read_text()
    return frozenset(json.loads(text)["codes"])


class Text(fields.String):
    """A string of at most ``max_length`` characters.

    Checked in the field rather than by a ``Length`` validator: the canonical schema has a dozen
    of these and runs in every ``enqueue``, where the validator machinery is most of the cost.
    """

    def __init__(self, *, max_length: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > self.max_length:
            raise ValidationError(f"Longer than {self.max_length} characters; shorten it.")
        return text


class LineItems(fields.Field):
    """``custom_data.contents``: line items ``{id, quantity, item_price, title}``.

    One field instead of a nested schema per item (a schema load per line item would cost more
    than the rest of the event); errors are keyed by index and field as marshmallow's are.
    """

    MAX_ITEMS = 1000

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ValidationError("Not a list; send a list of line items.")
        if len(value) > self.MAX_ITEMS:
            raise ValidationError(f"More than {self.MAX_ITEMS} line items.")
        items, errors = [], {}
        for index, item in enumerate(value):
            loaded, problems = _line_item(item)
            if problems:
                errors[index] = problems
            items.append(loaded)
        if errors:
            raise ValidationError(errors)
        return items


def _line_item(item: Any) -> tuple[dict[str, Any], Any]:
    if not isinstance(item, dict):
        return {}, {"_schema": ["Not an object; send {id, quantity, item_price, title}."]}
    loaded: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    if "id" not in item:
        problems["id"] = ["Missing data for required field."]
    for key, value in item.items():
        if value is None:
            continue
        if key == "id":
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                problems[key] = ["Not a valid identifier; send a non-empty string (or an integer)."]
            else:
                loaded[key] = str(value).strip()
        elif key == "quantity":
            if type(value) is not int or value < 0:
                problems[key] = ["Not a whole number of 0 or more."]
            else:
                loaded[key] = value
        elif key == "item_price":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                problems[key] = ["Not a number."]
            else:
                loaded[key] = float(value)
        elif key == "title":
            if not isinstance(value, str) or len(value) > 500:
                problems[key] = ["Not a string of at most 500 characters."]
            else:
                loaded[key] = value
        else:
            problems[key] = ["Unknown field."]
    return loaded, problems


class Members(fields.Field):
    """A nested object checked by the fields a schema declares, visiting only the keys present.

    Errors are those of ``Nested``: unknown keys refused, missing required keys reported, each
    key's own messages.  Nulls a field allows are left out of the result.  The canonical event's
    sub-objects declare many optional fields and a request sends few; ``Nested`` visits every
    declared field on every load, and that was a third of ``enqueue``'s time.
    """

    def __init__(self, schema: type[Schema], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.members = schema().load_fields
        self.required_keys = frozenset(name for name, member in self.members.items() if member.required)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError("Invalid input type.")
        loaded: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, raw in value.items():
            member = self.members.get(key)
            if member is None:
                errors[key] = ["Unknown field."]
                continue
            try:
                result = member.deserialize(raw, key, value)
            except ValidationError as exc:
                errors[key] = exc.messages
                continue
            if result is not None:
                loaded[key] = result
        for key in self.required_keys - value.keys():
            errors[key] = ["Missing data for required field."]
        if errors:
            raise ValidationError(errors)
        return loaded


class Identifier(fields.Field):
    """An id given as a string or an integer; always loaded as a string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("Not a valid identifier; send a string (or an integer).")
        text = str(value).strip()
        if not text:
            raise ValidationError("Empty identifier; leave the field out instead.")
        if len(text) > MAX_IDENTIFIER_CHARS:
            raise ValidationError(f"Longer than {MAX_IDENTIFIER_CHARS} characters.")
        return text


class OneOrMany(fields.List):
    """A list that also takes a single value, as ``em`` or ``external_id`` often arrive."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        return super()._deserialize(value, attr, data, **kwargs)


class _Hashed(fields.Field):
    """Base of the personal-data fields: a string, normalised and hashed on load."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("Not a string.")
        try:
            return self.hash(value)
        except pii.PIIError as exc:
            raise ValidationError(str(exc)) from None

    def hash(self, value: str) -> str:
        raise NotImplementedError


class HashedEmail(_Hashed):
    def hash(self, value: str) -> str:
        return pii.hash_email(value)


class HashedName(_Hashed):
    def hash(self, value: str) -> str:
        return pii.hash_name(value)


class HashedPhone(_Hashed):
    def __init__(self, *, default_region: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_region = default_region

    def hash(self, value: str) -> str:
        return pii.hash_phone(value, self.default_region)


class IpAddress(fields.Field):
    """An IPv4 or IPv6 address, written in its canonical (compressed) form so that the same
    address always hashes the same way."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("Not a string; send the address as text, e.g. 203.0.113.7.")
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValidationError("Not an IPv4 or IPv6 address.") from None
        # An IPv4 address written as IPv6 (::ffff:a.b.c.d) is the IPv4 address: hash it as one.
        mapped = getattr(address, "ipv4_mapped", None)
        return str(mapped or address)


class TextOrNumber(fields.Field):
    """A string, or a finite number that is not a boolean (``FilterItems`` values)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | int | float:
        if isinstance(value, str) and len(value) <= 500:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value
        raise ValidationError("Not a string (500 characters at most) or a finite number.")


class Currency(fields.Field):
    """An ISO 4217 code, upper-cased."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("Not a string; send an ISO 4217 code such as EUR.")
        code = value.strip().upper()
        if code not in currency_codes():
            raise ValidationError("Not an ISO 4217 currency code; send three letters such as EUR or USD.")
        return code


class UnixTime(fields.Field):
    """A point in time as whole UNIX seconds.

    Takes an integer or float of seconds, or an ISO 8601 string with a time zone.  Milliseconds
    (a common mistake) are refused with a message saying so.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise ValidationError("Not a time; send UNIX seconds as an integer.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("Not a finite number; send UNIX seconds as an integer.")
        if isinstance(value, (int, float)):
            seconds = int(value)
        elif isinstance(value, str):
            seconds = _parse_iso(value)
        else:
            raise ValidationError("Not a time; send UNIX seconds as an integer.")
        now = time.time()
        if seconds > now + MAX_FUTURE_SKEW_SECONDS:
            if seconds > 100_000_000_000:
                raise ValidationError("Looks like milliseconds; send UNIX seconds (divide by 1000).")
            raise ValidationError("In the future; send the time the event happened, in UNIX seconds.")
        if seconds <= 0:
            raise ValidationError("Not a time after 1970; send UNIX seconds.")
        return seconds


def _parse_iso(value: str) -> int:
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError("Not a time; send UNIX seconds or ISO 8601 with a time zone.") from None
    if parsed.tzinfo is None:
        raise ValidationError("ISO 8601 time without a time zone; add one (e.g. +00:00) or send UNIX seconds.")
    return int(parsed.timestamp())
