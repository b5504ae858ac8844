"""The canonical conversion event: what a web app hands to ``enqueue``.

Its shape is the Gravity Conversions API event, so the payload of that vendor's own example
loads unchanged::

    {"event_name": "Purchase", "event_time": 1718973400, "event_id": "order-123",
     "action_source": "website", "event_source_url": "https://shop.example/checkout",
     "user_data": {"em": ["customer@example.com"], "external_id": ["42"]},
     "custom_data": {"value": 99.99, "currency": "USD", "order_id": "123"}}

Loading validates every field, fills ``event_id`` (vendors deduplicate on it, so a retried
event is recognised) and ``event_time``, replaces e-mail, phone and names by their SHA-256
hex digests and leaves out nulls.  The loaded event holds no plaintext personal data and is
what gets stored.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

from conversion_relay.schemas import untrusted
from conversion_relay.schemas.fields import (
    Currency,
    HashedEmail,
    HashedName,
    HashedPhone,
    Identifier,
    IpAddress,
    LineItems,
    Members,
    OneOrMany,
    Text,
    TextOrNumber,
    UnixTime,
)

#: The standard event names of the Gravity Conversions API.
STANDARD_EVENT_NAMES = (
    "Purchase",
    "Lead",
    "CompleteRegistration",
    "Subscribe",
    "StartTrial",
    "InitiateCheckout",
    "AddToCart",
    "Contact",
    "Schedule",
)
#: Names other vendors have a meaning for (see docs/mapping.md).
BEHAVIOUR_EVENT_NAMES = (
    "PageView",
    "ViewContent",
    "Search",
    "AddToWishlist",
    "RemoveFromCart",
    "Login",
    "NewsletterSignup",
    "ApplyPromoCode",
    "FilterItems",
    "SortItems",
    "ChangeAttribute",
)
#: Other names pass as custom events.  A known name in other letter case is written the known
#: way, so it deduplicates with the pixel's events and maps at every vendor.
_KNOWN_BY_LOWER = {name.lower(): name for name in STANDARD_EVENT_NAMES + BEHAVIOUR_EVENT_NAMES}
#: Page types, as Gravity Field names them.
PAGE_TYPES = ("HOMEPAGE", "PRODUCT", "CART", "CATEGORY", "SEARCH", "OTHER")

#: Keys people send for personal data, and where the value belongs instead.
_KEY_HINTS = {
    "email": "em",
    "emails": "em",
    "phone": "ph",
    "phone_number": "ph",
    "first_name": "fn",
    "firstname": "fn",
    "last_name": "ln",
    "lastname": "ln",
    "name": "fn and ln",
}


def _with_hints(messages: Any) -> Any:
    """Messages where an unknown key that holds personal data says where it belongs."""
    if not isinstance(messages, dict):
        return messages
    hinted = {}
    for key, value in messages.items():
        if key in _KEY_HINTS and value == ["Unknown field."]:
            value = [f"Unknown field; personal data goes in {_KEY_HINTS[key]} (it is hashed there)."]
        hinted[key] = _with_hints(value)
    return hinted


def _without_nulls(event: dict[str, Any]) -> dict[str, Any]:
    """Stored events carry no nulls, so no vendor mapping has to look for them.

    Nulls are allowed only at the top, one level down (left out there by ``Members``) and
    anywhere in the pass-through ``client_context``; the rest of the schema refuses them.
    """
    out = {key: value for key, value in event.items() if value is not None}
    if "client_context" in out:
        out["client_context"] = _deep_without_nulls(out["client_context"])
    return out


def _deep_without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_deep_without_nulls(v) for v in value if v is not None]
    return value


class CustomDataSchema(Schema):
    class Meta:
        unknown = RAISE

    value = fields.Float(allow_none=True, allow_nan=False)
    currency = Currency()
    order_id = Identifier()
    contents = LineItems()
    content_name = Text(max_length=500)
    content_category = Text(max_length=500)
    predicted_ltv = fields.Float(allow_none=True, allow_nan=False)
    #: Behaviour details (Search, ApplyPromoCode, FilterItems, SortItems, ChangeAttribute).
    search_string = Text(max_length=500)
    promo_code = Text(max_length=200)
    filter_type = Text(max_length=200)
    filter_value = TextOrNumber()
    sort_by = Text(max_length=200)
    sort_order = fields.String(validate=validate.OneOf(("ASC", "DESC")))
    attribute_type = Text(max_length=200)
    attribute_value = Text(max_length=500)


class PageSchema(Schema):
    """Where the event happened; personalisation vendors target pages by it."""

    class Meta:
        unknown = RAISE

    type = fields.String(validate=validate.OneOf(PAGE_TYPES), pre_load=lambda v: v.upper() if isinstance(v, str) else v)
    location = Text(max_length=2048)
    referrer = Text(max_length=2048)
    language = Text(max_length=20)
    data = fields.List(Text(max_length=500), validate=validate.Length(max=200))


class ScreenSchema(Schema):
    class Meta:
        unknown = INCLUDE

    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    color_depth = fields.Integer(allow_none=True)


class ClientContextSchema(Schema):
    """Device signals from the vendor's pixel, passed through; unknown keys are kept.

    What any key may hold (depth, JSON types, no personal data) is checked for the whole event
    by :mod:`conversion_relay.schemas.untrusted` before this schema runs."""

    class Meta:
        unknown = INCLUDE

    timezone = fields.String(allow_none=True)
    screen = fields.Nested(ScreenSchema, allow_none=True)
    viewport = fields.Nested(ScreenSchema, allow_none=True)
    platform = fields.String(allow_none=True)
    connection = fields.Dict(allow_none=True)


def _optional_string() -> Text:
    return Text(allow_none=True, max_length=1000)


def user_data_schema_class(default_phone_region: str | None) -> type[Schema]:
    """``user_data`` schema; phone numbers without a country code are read in the region."""

    class UserDataSchema(Schema):
        class Meta:
            unknown = RAISE

        grclid = _optional_string()
        grcpid = _optional_string()
        grpuid = _optional_string()
        gradid = _optional_string()
        grsig = _optional_string()
        graid = _optional_string()
        visitor_id = _optional_string()
        session_id = _optional_string()
        client_user_agent = _optional_string()
        client_ip_address = IpAddress(allow_none=True)
        browser_id = _optional_string()
        #: Gravity Field's own cookies (``_slid``, ``_slid_server``, ``_slsession``): the only
        #: ids Field knows a guest by; no other vendor's id stands in for them.
        gravity_field_user_id = _optional_string()
        gravity_field_server_user_id = _optional_string()
        gravity_field_session_id = _optional_string()
        #: Gravity RECO's own cookie id (``cookieId``), as RECO's front end set it: never taken
        #: from another vendor's id, which RECO could not match with its own events.
        reco_cookie_id = _optional_string()
        em = OneOrMany(HashedEmail(), validate=validate.Length(max=10))
        ph = OneOrMany(HashedPhone(default_region=default_phone_region), validate=validate.Length(max=10))
        fn = HashedName()
        ln = HashedName()
        external_id = OneOrMany(Identifier(), validate=validate.Length(max=10))

    return UserDataSchema


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _now() -> int:
    return int(time.time())


def canonical_schema_class(default_phone_region: str | None = None) -> type[Schema]:
    """The canonical event schema class for one phone region."""

    class CanonicalEventSchema(Schema):
        class Meta:
            unknown = RAISE

        event_name = fields.String(required=True, validate=validate.Length(min=1, max=100))
        event_time = UnixTime(load_default=_now)
        event_id = Identifier(load_default=_new_event_id)
        action_source = Text(load_default="website", max_length=64, validate=validate.Length(min=1))
        event_source_url = Text(allow_none=True, max_length=2048)
        user_data = Members(user_data_schema_class(default_phone_region), load_default=dict)
        client_context = fields.Nested(ClientContextSchema, allow_none=True)
        custom_data = Members(CustomDataSchema, allow_none=True)
        page = Members(PageSchema, allow_none=True)
        test_event_code = Text(allow_none=True, max_length=100)

        @post_load
        def _normalise(self, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            event["event_name"] = _KNOWN_BY_LOWER.get(event["event_name"].lower(), event["event_name"])
            if not event.get("event_source_url"):
                event.pop("event_source_url", None)
            return _without_nulls(event)

        def load(self, data: Any, *, many: bool | None = None, partial: Any = None, unknown: Any = None) -> Any:
            """Load after :func:`conversion_relay.schemas.untrusted.check` looked at the whole input: the fields
            check what they declare, the walk what JSON and privacy demand of every value.  Both
            sets of problems are reported together, each under its field, unless the input is
            of a kind the fields should not see at all (a fatal finding)."""
            many = self.many if many is None else bool(many)
            findings = untrusted.check(data, many=many)
            if findings.fatal:
                raise ValidationError(findings.messages())
            try:
                loaded = super().load(data, many=many, partial=partial, unknown=unknown)
            except ValidationError as exc:
                raise ValidationError(findings.messages(exc.messages)) from None
            if findings.problems:
                raise ValidationError(findings.messages())
            return loaded

        def handle_error(self, error: ValidationError, data: Any, *, many: bool, **kwargs: Any) -> None:
            raise ValidationError(_with_hints(error.messages), data=data, valid_data=error.valid_data)

    return CanonicalEventSchema


@functools.cache
def canonical_schema(default_phone_region: str | None = None) -> Schema:
    """A shared, ready instance (schemas are stateless once built; building costs time)."""
    return canonical_schema_class(default_phone_region)()


@functools.cache
def canonical_many_schema(default_phone_region: str | None = None) -> Schema:
    return canonical_schema_class(default_phone_region)(many=True)
