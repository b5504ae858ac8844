"""Gravity RECO (Yusp) WebshopServlet: ``addEvents``, ``addItems``, ``addUsers``.

- Mapping: ViewContent → VIEW, Purchase → BUY, AddToCart → ADD_TO_CART, RemoveFromCart →
  REMOVE_FROM_CART, AddToWishlist → ADD_TO_WISHLIST (one RECO event per line item), Search →
  PRODUCT_SEARCH, Login → LOGIN; other names are skipped unless ``event_types`` maps them (the
  type list is the customer's to extend).  BUY carries ``unitPrice``, ``quantity``, ``orderId``
  (and ``currency``) as name values; ``name_value_case = "pascal"`` writes ``UnitPrice`` etc.,
  as the vendor's Java client documents.  ``userId`` is the first ``external_id``, ``cookieId``
  RECO's own cookie (``user_data.reco_cookie_id``), never another vendor's id.  Items and users
  (catalogue updates, hiding) come as vendor-native payloads.
- Nothing is invented: an event with neither id is skipped (``no_user_id``), a missing quantity
  is left out, and a price is sent only with its currency (the event's, else an explicit
  ``default_currency``).  Skip reasons are listed in docs/mapping.md.
- Batching: one operation per request (the group), at most ``max_events`` (default 200, the
  vendor suggests 100–200) and 1 MB (the vendor answers 413 above).  No compressed uploads.
- Authentication: HTTP Basic, ``username`` with the key as password.
- Requests run in parallel (``parallel_drains`` 2), with keep-alive, as the vendor asks.
- Responses: an empty 200.  The vendor has no idempotency key: a retried request may store
  events twice.  A 400 refusing several items splits the request until the refused one is alone.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, validate

from conversion_relay.outcomes import Accepted, Outcome
from conversion_relay.schemas import reading
from conversion_relay.schemas.gravity_reco import ITEM_EVENT_TYPES, OPERATIONS
from conversion_relay.vendors.base import Part, Request, Skip, VendorAdapter, encode
from conversion_relay.vendors.destination import DestinationSchema

DEFAULT_EVENT_TYPES = {
    "ViewContent": "VIEW",
    "Purchase": "BUY",
    "AddToCart": "ADD_TO_CART",
    "RemoveFromCart": "REMOVE_FROM_CART",
    "AddToWishlist": "ADD_TO_WISHLIST",
    "Search": "PRODUCT_SEARCH",
    "Login": "LOGIN",
}


#: Event types that carry a quantity.
_COUNTED = frozenset({"BUY", "ADD_TO_CART", "REMOVE_FROM_CART"})
#: Names of user name values that hold personal data (hashed on load, found by erasure).
_PERSONAL_NAME = re.compile(r"(?i)e-?mail|phone|mobile")


class GravityRecoSettingsSchema(DestinationSchema):
    username = fields.String(required=True, validate=validate.Length(min=1))
    #: Used to build the base URL when ``base_url`` is not given.
    customer = fields.String(validate=validate.Regexp(r"^[a-z0-9-]+\Z"))
    location = fields.String(validate=validate.Regexp(r"^[a-z0-9]+\Z"))
    #: ``async=true`` returns after validation, ``false`` after the data is saved.
    async_ = fields.Boolean(data_key="async")
    name_value_case = fields.String(validate=validate.OneOf(("camel", "pascal")))
    send_currency = fields.Boolean()
    #: Currency of orders that carry none; no default, so no price is sent in a guessed currency.
    default_currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}\Z"))
    event_types = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.Length(min=1)))


class GravityRecoAdapter(VendorAdapter):
    vendor = "gravity_reco"
    title = "Gravity RECO (Yusp)"
    default_destination_name = "reco"
    settings_schema = GravityRecoSettingsSchema
    #: Documented: 100-200 events per request suggested, 1 MB (413 above).
    max_events_limit = 200
    max_events_documented = True
    max_bytes_documented = True
    default_max_events = 200
    default_parallel_drains = 2
    splits_rejected_batches = True
    base_url_hint = "Set base_url, or customer and location to build it."

    @classmethod
    def base_url_for(cls, options: Mapping[str, Any]) -> str | None:
        customer, location = options.get("customer"), options.get("location")
        if not customer or not location:
            return None
        return f"https://{customer}-{location}.gravityrd-services.com/grrec-{customer}-war/WebshopServlet"

    def __init__(self, destination: Any) -> None:
        super().__init__(destination)
        options = destination.options
        self.async_ = options.get("async_", True)
        self.pascal = options.get("name_value_case", "camel") == "pascal"
        self.send_currency = options.get("send_currency", True)
        self.default_currency = options.get("default_currency")
        self.event_types = {**DEFAULT_EVENT_TYPES, **options.get("event_types", {})}
        credentials = f"{options['username']}:{destination.api_key}".encode()
        self.authorization = "Basic " + base64.b64encode(credentials).decode()

    @classmethod
    def person_values(cls, node: Mapping[str, Any]) -> list[Any]:
        """``userId``, and the values of name values named as e-mail or phone (``addUsers``
        items carry a user's own, hashed on load)."""
        found = [node.get("userId")]
        pairs = node.get("nameValues")
        if isinstance(pairs, list):
            personal = (p for p in pairs if isinstance(p, dict) and _PERSONAL_NAME.search(str(p.get("name", ""))))
            found += [p.get("value") for p in personal]
        return found

    def map_event(self, event: Mapping[str, Any]) -> list[Part]:
        event_type = self.event_types.get(event["event_name"])
        if event_type is None:
            raise Skip("unmapped_event")
        base: dict[str, Any] = {"eventType": event_type, "time": event["event_time"]}
        if reading.user_id(event):
            base["userId"] = reading.user_id(event)
        if reading.reco_cookie_id(event):
            base["cookieId"] = reading.reco_cookie_id(event)
        if event_type == "LOGIN":
            _login_ids(base)
        elif "userId" not in base and "cookieId" not in base:
            raise Skip("no_user_id")
        data = reading.custom_data(event)
        if event_type == "PRODUCT_SEARCH":
            return [self._part(base, [("searchString", data.get("search_string"))])]
        if event_type not in ITEM_EVENT_TYPES:
            return [self._part(base, [])]
        items = reading.line_items(event)
        if not items:
            raise Skip("no_line_items")
        currency = data.get("currency") or self.default_currency
        parts = []
        for item in items:
            values = [("quantity", item.get("quantity"))] if event_type in _COUNTED else []
            if event_type == "BUY":
                price = item.get("item_price") if currency else None
                values += [("unitPrice", price), ("orderId", reading.order_id(event))]
                if price is not None and self.send_currency:
                    values.append(("currency", currency))
            parts.append(self._part({**base, "itemId": item["id"]}, values))
        return parts

    def _part(self, event: dict[str, Any], values: list[tuple[str, Any]]) -> Part:
        pairs = [{"name": self._name(name), "value": _text(value)} for name, value in values if value not in (None, "")]
        if pairs:
            event["nameValues"] = pairs
        return Part("addEvents", encode(event))

    def _name(self, name: str) -> str:
        return name[0].upper() + name[1:] if self.pascal else name

    def load_native(
        self, payload: Any, operation: str | None, *, phone_region: str | None = None
    ) -> list[dict[str, Any]]:
        """A request body (a list) or one item, for ``operation`` addEvents, addItems, addUsers
        or hideItems (items by ``itemId``; sent through addItems with ``hidden: true``)."""
        schema = OPERATIONS.get(operation or "")
        if schema is None:
            raise ValidationError({"operation": [f"Give one of: {', '.join(OPERATIONS)}."]})
        return schema(many=True).load(payload if isinstance(payload, list) else [payload])

    def map_native(self, item: Mapping[str, Any], operation: str | None) -> list[Part]:
        if operation == "hideItems":
            return [Part("addItems", encode({"itemId": item["itemId"], "hidden": True}))]
        return [Part(str(operation), encode(item))]

    def envelope(self, group: str) -> tuple[bytes, bytes]:
        return b"[", b"]"

    def request_for(self, group: str, body: bytes) -> Request:
        return Request(
            method="POST",
            url=f"{self.destination.base_url}/{group}",
            params={"async": "true" if self.async_ else "false"},
            headers={"Authorization": self.authorization, "Content-Type": "application/json; charset=utf-8"},
            body=body,
        )

    def interpret_success(self, status: int, body: bytes, parts: list[bytes]) -> Outcome:
        return Accepted(statuses=["ok"] * len(parts))


def _login_ids(event: dict[str, Any]) -> None:
    """RECO's LOGIN joins a cookie's history to a user, so it needs both ids (jsondto)."""
    if "userId" not in event:
        raise Skip("no_user_id")
    if "cookieId" not in event:
        raise Skip("no_cookie_id")


def _text(value: Any) -> str:
    """Name values are strings; prices without trailing zeros (``199.9``, ``1234``)."""
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)
