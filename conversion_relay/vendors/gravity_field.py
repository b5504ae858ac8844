"""Gravity Field SSAPI (gravityfield.ai): ``POST /ssapi/event`` and ``POST /ssapi/page``.

- Mapping: a canonical event becomes one Field event (``name`` + ``properties`` with its
  ``eventType``), see docs/mapping.md; page and product views become page requests.  The user
  is the first ``external_id`` (``user.id``) and Field's own cookies (``user.slid``,
  ``user.slid_server``, ``session.sl``) carried as ``user_data.gravity_field_*``; another
  vendor's ids never go there.  The context is the page and the end user's device.
- What the relay does not know it does not invent: the OpenAPI (seed 003) says a request
  without ``device.ip`` is placed at "the caller IP" and one without ``device.userAgent`` takes
  the request's header -- both the relay's -- and a user without ids is a new user, so such
  events are skipped (``no_client_ip``, ``no_user_agent``, ``no_user_id``) unless the
  destination says ``without_client_ip``, ``without_user_agent`` or ``without_user_id = "send"``.  Money
  without a currency takes ``default_currency`` only where the destination sets it; a missing
  value is never 0, a missing price or quantity is never made up (the item is dropped where
  the document requires it).  Every skip names its reason (docs/mapping.md).
- Batching: one user, session and context per request (the group), its events in order; page
  views go one per request.  At most ``max_events`` per request (not documented; default 50).
  Field judges a request whole (no per-event results), so a refused request is split until
  the refused event is alone and its neighbours are delivered.
- Authentication: ``Authorization: Bearer <section key>``; ``auth = "basic"`` sends
  ``Basic base64(key + ":")`` for accounts set up as the English guide describes.
- Limits: 500 requests per second per section (seed 001), shared with the site's own calls:
  the relay takes 250 by default and refuses a ``rate_limit_per_second`` above 500 (or 0,
  no limit).  All workers hold it together; destinations with the same key share it.
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

from conversion_relay.outcomes import Accepted, Outcome
from conversion_relay.schemas import pii, reading
from conversion_relay.schemas.fields import Currency
from conversion_relay.schemas.gravity_field import event_request_schema, page_request_schema
from conversion_relay.vendors.base import Part, Request, Skip, VendorAdapter, encode
from conversion_relay.vendors.destination import DestinationSchema

PAGE = "page"
EVENT = "event:"
#: Documented: "All requests are limited to 500 requests per second (RPS) per section" (seed 001).
RATE_LIMIT_DOCUMENTED = 500.0
#: What to do with an event the vendor would misread: skip it (the default) or send it anyway.
_SKIP_OR_SEND = validate.OneOf(("skip", "send"))


class GravityFieldSettingsSchema(DestinationSchema):
    auth = fields.String(validate=validate.OneOf(("bearer", "basic")))
    #: ``context.page.location`` for events that name no page (the document requires a page).
    default_page_location = fields.String(validate=validate.Length(min=1, max=2048))
    #: ``cuidType`` sent with ``cuid`` on sign-up and login events.
    cuid_type = fields.String(validate=validate.Length(min=1, max=100))
    #: Send PageView and ViewContent events as ``/ssapi/page`` requests.
    page_views = fields.Boolean()
    #: Currency of money that names none; no default, so none is assumed unless set here.
    default_currency = Currency()
    #: ``send``: an event without the end user's IP goes without ``device.ip`` and Field records
    #: the relay's IP for it; ``skip`` (default): counted as ``no_client_ip``.
    without_client_ip = fields.String(validate=_SKIP_OR_SEND)
    #: ``send``: an event with no user id goes with ``user {}`` and Field makes a new user of
    #: each request; ``skip`` (default): counted as ``no_user_id``.
    without_user_id = fields.String(validate=_SKIP_OR_SEND)
    #: ``send``: an event without the browser's user agent goes without ``device.userAgent`` and
    #: Field reads the relay's ``User-Agent`` header instead; ``skip`` (default): ``no_user_agent``.
    without_user_agent = fields.String(validate=_SKIP_OR_SEND)
    rate_limit_per_second = fields.Float(
        validate=validate.Range(
            min=0.0,
            max=RATE_LIMIT_DOCUMENTED,
            min_inclusive=False,
            error="Gravity Field allows at most 500 requests per second per section (0, no limit, "
            "is above that too); the default 250 leaves the rest to the site's own calls.",
        )
    )


class GravityFieldAdapter(VendorAdapter):
    vendor = "gravity_field"
    title = "Gravity Field SSAPI"
    default_destination_name = "field"
    default_base_url = "https://evs.gravityfield.ai"
    settings_schema = GravityFieldSettingsSchema
    #: Neither events nor bytes per request are documented: 1,000 and 1 MB are assumed caps.
    max_events_limit = 1000
    default_max_events = 50
    #: Half the documented 500/s: the section's limit counts the site's own calls too.
    default_rate_limit_per_second = 250.0
    rate_limit_per_second_limit = RATE_LIMIT_DOCUMENTED
    #: 422 carries no per-event result: halves are sent until the refused event is alone.
    splits_rejected_batches = True

    def __init__(self, destination: Any) -> None:
        super().__init__(destination)
        options = destination.options
        self.auth = options.get("auth", "bearer")
        self.default_location = options.get("default_page_location", "server")
        self.cuid_type = options.get("cuid_type", "customer_id")
        self.page_views = options.get("page_views", True)
        self.default_currency = options.get("default_currency")
        self.send_without_ip = options.get("without_client_ip", "skip") == "send"
        self.send_without_user = options.get("without_user_id", "skip") == "send"
        self.send_without_agent = options.get("without_user_agent", "skip") == "send"

    @classmethod
    def person_values(cls, node: Mapping[str, Any]) -> list[Any]:
        """``user.id`` of a request envelope (the group), ``cuid`` and ``hashedEmail`` of an
        event's properties."""
        user = node.get("user")
        return [user.get("id") if isinstance(user, dict) else None, node.get("cuid"), node.get("hashedEmail")]

    # -- mapping -----------------------------------------------------------------------------

    def map_event(self, event: Mapping[str, Any]) -> list[Part]:
        name = event["event_name"]
        if name in ("PageView", "ViewContent") and not self.page_views:
            raise Skip("page_views_off")
        envelope = {"user": self._user(event), "session": _session(event), "context": self._context(event)}
        if name in ("PageView", "ViewContent"):
            return [Part(PAGE, encode(envelope))]
        properties = self._properties(event)
        properties["event_time"] = _iso(event["event_time"])
        return [Part(_group(envelope), encode({"name": name, "properties": properties}))]

    def _properties(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The ``properties`` of the Field event.  Raises Skip when the event cannot be expressed."""
        name, data = event["event_name"], reading.custom_data(event)
        items = reading.line_items(event)
        if name == "Purchase":
            cart, total = _cart(items, empty_ok=True), reading.value(event)
            if total is None:
                raise Skip("no_value")
            return {"eventType": "purchase-v1", "value": total, "uniqueTransactionId": reading.order_id(event),
                    "cart": cart, **self._currency(event)}  # fmt: skip
        if name in ("AddToCart", "RemoveFromCart"):
            return self._cart_change(event, name, items)
        if name == "AddToWishlist":
            if not items:
                raise Skip("no_items")
            return {"eventType": "add-to-wishlist-v1", "productId": items[0]["id"]}
        if name == "InitiateCheckout":
            return {"eventType": "sync-cart-v1", "cart": _cart(items), **self._currency(event)}
        simple = _SIMPLE.get(name)
        if simple:
            kind, wanted = simple
            for source in wanted.values():
                if source not in data:
                    raise Skip(f"no_{source}")
            return {"eventType": kind, **{target: data[source] for target, source in wanted.items()}}
        if name == "FilterItems":
            for source in ("filter_type", "filter_value"):
                if source not in data:
                    raise Skip(f"no_{source}")
            key = "filterStringValue" if isinstance(data["filter_value"], str) else "filterNumericValue"
            return {"eventType": "filter-items-v1", "filterType": data["filter_type"], key: data["filter_value"]}
        if name in ("CompleteRegistration", "Login", "NewsletterSignup"):
            return self._identity(event, {"CompleteRegistration": "signup-v1", "Login": "login-v1"}.get(
                name, "newsletter-subscription-v1"))  # fmt: skip
        total = reading.value(event)
        currency = self._currency(event, required=False)
        if total is None or not currency:
            return {}
        return {"value": total, **currency}

    def _cart_change(self, event: Mapping[str, Any], name: str, items: list[Mapping[str, Any]]) -> dict[str, Any]:
        """add-to-cart-v1 / remove-from-cart-v1 for the first line item; the document requires
        ``quantity`` when adding (an item without one is dropped), not when removing."""
        adding = name == "AddToCart"
        usable = [item for item in items if "quantity" in item] if adding else items
        if not usable:
            raise Skip("no_items")
        first = usable[0]
        value = reading.custom_data(event).get("value")
        if value is None and "item_price" in first and "quantity" in first:
            value = round(first["item_price"] * first["quantity"], 2)
        if value is None:
            raise Skip("no_value")
        properties = {"eventType": "add-to-cart-v1" if adding else "remove-from-cart-v1", "value": float(value),
                      "productId": first["id"], **self._currency(event)}  # fmt: skip
        if "quantity" in first:
            properties["quantity"] = first["quantity"]
        return properties

    def _currency(self, event: Mapping[str, Any], *, required: bool = True) -> dict[str, str]:
        """The event's currency, else the destination's ``default_currency``; without either,
        Field would take the section's default, so the event is skipped (``no_currency``)."""
        currency = reading.custom_data(event).get("currency") or self.default_currency
        if currency:
            return {"currency": currency}
        if required:
            raise Skip("no_currency")
        return {}

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

    def _user(self, event: Mapping[str, Any]) -> dict[str, str]:
        """``user``: the shop's id and Field's own cookies.  Without any, Field would make a new
        user of every request: skipped as ``no_user_id`` unless ``without_user_id = "send"``."""
        data = reading.user_data(event)
        user = {target: data[source] for target, source in _USER_IDS.items() if data.get(source)}
        if reading.user_id(event):
            user["id"] = reading.user_id(event)  # type: ignore[assignment]
        if not user and not self.send_without_user:
            raise Skip("no_user_id")
        return user

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
        ip = reading.ip_address(event)
        if not ip and not self.send_without_ip:
            raise Skip("no_client_ip")
        agent = reading.user_agent(event)
        if not agent and not self.send_without_agent:
            raise Skip("no_user_agent")
        device = {"userAgent": agent, "ip": ip}
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


#: ``user`` members from Field's own cookies, carried in the canonical ``user_data``.
_USER_IDS = {"slid": "gravity_field_user_id", "slid_server": "gravity_field_server_user_id"}


def _session(event: Mapping[str, Any]) -> dict[str, str]:
    """``session.sl``, Field's ``_slsession`` cookie; empty (a new session) without it.

    ``user_data.session_id`` is the Gravity pixel's session, not Field's: it is never sent."""
    session = reading.user_data(event).get("gravity_field_session_id")
    return {"sl": session} if session else {}


def _complete(item: Mapping[str, Any]) -> bool:
    return "quantity" in item and "item_price" in item


def _cart(items: list[Mapping[str, Any]], *, empty_ok: bool = False) -> list[dict[str, Any]]:
    """``cart[]``: the document requires productId, quantity and itemPrice of every item, so an
    item without a quantity or price is dropped; with none left the event is skipped.  A
    purchase that names no items at all (``empty_ok``) goes with the empty cart the document
    allows: nothing about its items is claimed."""
    cart = [
        {"productId": item["id"], "quantity": item["quantity"], "itemPrice": item["item_price"]}
        for item in items
        if _complete(item)
    ]
    if not cart and (items or not empty_ok):
        raise Skip("no_items")
    return cart


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
