"""Gravity Field SSAPI (gravityfield.ai): ``POST /ssapi/event`` and ``POST /ssapi/page``.

- Mapping: a canonical event becomes one Field event (``name`` + ``properties`` with its
  ``eventType``), see docs/mapping.md; page and product views become page requests.  The user
  is the first ``external_id`` (``user.id``), the session ``user_data.session_id``
  (``session.custom``), the context the page and the end user's device (IP and user agent: if
  left out, the vendor would take the relay's own).
- Batching: one user, session and context per request (the group), its events in order; page
  views go one per request.  At most ``max_events`` per request (not documented; default 50).
- Authentication: ``Authorization: Bearer <section key>``; ``auth = "basic"`` sends
  ``Basic base64(key + ":")`` for accounts set up as the English guide describes.
- Limits: 500 requests per second per section, held by all workers together
  (``rate_limit_per_second``; destinations with the same key share it).
- Responses: 200 (new user/session ids, not needed server-side) and 204 are success; 401 and
  422 are permanent and the vendor's message is kept in the dead letter.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson
from marshmallow import ValidationError, fields, validate

from schemas import pii, reading
from schemas.gravity_field import event_request_schema, page_request_schema
from worker.outcomes import Accepted, Outcome
from worker.settings import DestinationSchema
from worker.vendors.base import Part, Request, VendorAdapter, encode

PAGE = "page"
EVENT = "event:"


class GravityFieldSettingsSchema(DestinationSchema):
    auth = fields.String(validate=validate.OneOf(("bearer", "basic")))
    #: ``context.page.location`` for events that name no page (the document requires a page).
    default_page_location = fields.String(validate=validate.Length(min=1, max=2048))
    #: ``cuidType`` sent with ``cuid`` on sign-up and login events.
    cuid_type = fields.String(validate=validate.Length(min=1, max=100))
    #: Send PageView and ViewContent events as ``/ssapi/page`` requests.
    page_views = fields.Boolean()


class GravityFieldAdapter(VendorAdapter):
    vendor = "gravity_field"
    title = "Gravity Field SSAPI"
    default_destination_name = "field"
    default_base_url = "https://evs.gravityfield.ai"
    sandbox_prefix = "gravity-field"
    settings_schema = GravityFieldSettingsSchema
    max_events_limit = 1000
    default_max_events = 50
    default_rate_limit_per_second = 500.0

    def __init__(self, destination: Any) -> None:
        super().__init__(destination)
        options = destination.options
        self.auth = options.get("auth", "bearer")
        self.default_location = options.get("default_page_location", "server")
        self.cuid_type = options.get("cuid_type", "customer_id")
        self.page_views = options.get("page_views", True)

    # -- mapping -----------------------------------------------------------------------------

    def map_event(self, event: Mapping[str, Any]) -> list[Part]:
        name = event["event_name"]
        envelope = {"user": _user(event), "session": _session(event), "context": self._context(event)}
        if name in ("PageView", "ViewContent"):
            return [Part(PAGE, encode(envelope))] if self.page_views else []
        properties = self._properties(event)
        if properties is None:
            return []
        properties["event_time"] = _iso(event["event_time"])
        return [Part(_group(envelope), encode({"name": name, "properties": properties}))]

    def _properties(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The ``properties`` of the Field event, or None when the event cannot be expressed."""
        name, data = event["event_name"], reading.custom_data(event)
        items = reading.line_items(event)
        money = {"currency": data["currency"]} if "currency" in data else {}
        first = items[0] if items else None
        if name == "Purchase":
            total = reading.value(event)
            if total is None:
                return None
            cart = _cart(items)
            return {"eventType": "purchase-v1", "value": total, "uniqueTransactionId": reading.order_id(event),
                    "cart": cart, **money}  # fmt: skip
        if name in ("AddToCart", "RemoveFromCart"):
            if first is None:
                return None
            quantity = first.get("quantity", 1)
            total = data.get("value", first.get("item_price", 0.0) * quantity)
            kind = "add-to-cart-v1" if name == "AddToCart" else "remove-from-cart-v1"
            return {"eventType": kind, "value": total, "quantity": quantity, "productId": first["id"], **money}
        if name == "AddToWishlist":
            return {"eventType": "add-to-wishlist-v1", "productId": first["id"]} if first else None
        if name == "InitiateCheckout":
            return {"eventType": "sync-cart-v1", "cart": _cart(items), **money} if items else None
        simple = _SIMPLE.get(name)
        if simple:
            kind, wanted = simple
            if not all(source in data for source in wanted.values()):
                return None
            return {"eventType": kind, **{target: data[source] for target, source in wanted.items()}}
        if name == "FilterItems":
            if "filter_type" not in data or "filter_value" not in data:
                return None
            key = "filterStringValue" if isinstance(data["filter_value"], str) else "filterNumericValue"
            return {"eventType": "filter-items-v1", "filterType": data["filter_type"], key: data["filter_value"]}
        if name in ("CompleteRegistration", "Login", "NewsletterSignup"):
            return self._identity(event, {"CompleteRegistration": "signup-v1", "Login": "login-v1"}.get(
                name, "newsletter-subscription-v1"))  # fmt: skip
        custom: dict[str, Any] = {}
        total = reading.value(event)
        if total is not None:
            custom["value"] = total
        custom.update(money)
        return custom

    def _identity(self, event: Mapping[str, Any], kind: str) -> dict[str, Any]:
        properties: dict[str, Any] = {"eventType": kind}
        cuid = reading.user_id(event)
        if cuid:
            properties["cuid"] = cuid
            if kind != "newsletter-subscription-v1":
                properties["cuidType"] = self.cuid_type
        email = reading.email_hash(event)
        if email and kind != "newsletter-subscription-v1":
            properties["hashedEmail"] = email
        return properties

    def _context(self, event: Mapping[str, Any]) -> dict[str, Any]:
        page = reading.page(event)
        context_page = {
            "type": page.get("type") or _page_type(event),
            "data": page.get("data") if "data" in page else _page_data(event, page.get("type") or _page_type(event)),
            "location": reading.url(event) or self.default_location,
        }
        if "language" in page:
            context_page["lng"] = page["language"]
        if "referrer" in page:
            context_page["referrer"] = page["referrer"]
        device = {"userAgent": reading.user_agent(event), "ip": reading.ip_address(event)}
        context: dict[str, Any] = {"page": context_page}
        if any(device.values()):
            context["device"] = {k: v for k, v in device.items() if v}
        return context

    # -- native payloads -----------------------------------------------------------------------

    def load_native(
        self, payload: Any, operation: str | None, *, phone_region: str | None = None
    ) -> list[dict[str, Any]]:
        """An ``/ssapi/event`` body (or a list of them), one stored item per event; with
        ``operation="page"`` an ``/ssapi/page`` body.  A plaintext ``hashedEmail`` is hashed."""
        if operation not in (None, "event", "page"):
            raise ValidationError({"operation": ["Use 'event' (the default) or 'page'."]})
        bodies = payload if isinstance(payload, list) else [payload]
        if operation == "page":
            return [{"page": body} for body in page_request_schema().load(bodies, many=True)]
        items = []
        for number, body in enumerate(event_request_schema().load(bodies, many=True)):
            envelope = {key: body[key] for key in ("user", "session", "context")}
            for index, event in enumerate(body["events"]):
                try:
                    items.append({"envelope": envelope, "event": _hash_email(event)})
                except ValidationError as exc:
                    raise ValidationError({number: {"events": {index: exc.messages}}}) from None
        return items

    def map_native(self, item: Mapping[str, Any], operation: str | None) -> list[Part]:
        if "page" in item:
            return [Part(PAGE, encode(item["page"]))]
        return [Part(_group(item["envelope"]), encode(item["event"]))]

    # -- requests and responses ----------------------------------------------------------------

    def max_parts_for(self, group: str) -> int:
        return 1 if group == PAGE else self.destination.max_events

    def envelope(self, group: str) -> tuple[bytes, bytes]:
        if group == PAGE:
            return b"", b""
        shared = group[len(EVENT) :].encode()
        return shared[:-1] + b',"events":[', b"]}"

    def request_for(self, group: str, body: bytes) -> Request:
        path = "/ssapi/page" if group == PAGE else "/ssapi/event"
        key = self.destination.api_key
        if self.auth == "basic":
            authorization = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        else:
            authorization = f"Bearer {key}"
        return Request(
            method="POST",
            url=f"{self.destination.base_url}{path}",
            headers={"Authorization": authorization, "Content-Type": "application/json"},
            body=body,
        )

    def interpret_success(self, status: int, body: bytes, parts: list[bytes]) -> Outcome:
        return Accepted(statuses=["ok"] * len(parts))


_SIMPLE = {
    "Search": ("keyword-search-v1", {"keywords": "search_string"}),
    "ApplyPromoCode": ("enter-promo-code-v1", {"code": "promo_code"}),
    "SortItems": ("sort-items-v1", {"sortBy": "sort_by", "sortOrder": "sort_order"}),
    "ChangeAttribute": (
        "change-attribute-v1",
        {"attributeType": "attribute_type", "attributeValue": "attribute_value"},
    ),
}


def _group(envelope: Mapping[str, Any]) -> str:
    """Requests share user, session and context; the group is that shared part, as JSON."""
    return EVENT + orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS).decode()


def _user(event: Mapping[str, Any]) -> dict[str, str]:
    user_id = reading.user_id(event)
    return {"id": user_id} if user_id else {}


def _session(event: Mapping[str, Any]) -> dict[str, str]:
    session_id = reading.session_id(event)
    return {"custom": session_id} if session_id else {}


def _cart(items: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"productId": item["id"], "quantity": item.get("quantity", 1), "itemPrice": item.get("item_price", 0.0)}
        for item in items
    ]


def _page_type(event: Mapping[str, Any]) -> str:
    return {"ViewContent": "PRODUCT", "Search": "SEARCH"}.get(event["event_name"], "OTHER")


def _page_data(event: Mapping[str, Any], page_type: str) -> list[str]:
    """What the document wants in ``page.data``: the SKU, the category, the cart's SKUs, the query."""
    items = reading.line_items(event)
    data = reading.custom_data(event)
    if page_type == "PRODUCT" and items:
        return [items[0]["id"]]
    if page_type == "CART":
        return [item["id"] for item in items]
    if page_type == "CATEGORY" and "content_category" in data:
        return [data["content_category"]]
    if page_type == "SEARCH" and "search_string" in data:
        return [data["search_string"]]
    return []


def _iso(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmm+00:00``, the form the document gives for ``event_time``."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def _hash_email(event: dict[str, Any]) -> dict[str, Any]:
    properties = event.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get("hashedEmail"), str):
        try:
            properties["hashedEmail"] = pii.hash_email(properties["hashedEmail"])
        except pii.PIIError as exc:
            raise ValidationError({"properties": {"hashedEmail": [str(exc)]}}) from None
    return event
