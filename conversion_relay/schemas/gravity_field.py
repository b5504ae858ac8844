"""Gravity Field SSAPI payloads, checked against the vendor's own OpenAPI document.

``conversion_relay/schemas/data/gravity_field_openapi.json`` was extracted mechanically from the vendor's
reference page (``tools/extract_field_openapi.py``); the schemas here are built from it, so a
native payload is checked exactly as far as the vendor documents it, plus one rule the document
cannot say: an event naming a predefined ``eventType`` must match that event's schema (the
``customEvent`` alternative, which requires nothing, would otherwise accept anything).
"""

from __future__ import annotations

import functools
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

from conversion_relay.schemas.openapi import AnyOf, Builder, load_document

DOCUMENT = "gravity_field_openapi.json"

#: ``properties.eventType`` of each predefined event, and its schema in the document.
EVENT_TYPES = {
    "add-to-cart-v1": "addToCart",
    "purchase-v1": "purchase",
    "remove-from-cart-v1": "removeFromCart",
    "sync-cart-v1": "syncCart",
    "add-to-wishlist-v1": "addToWishList",
    "change-attribute-v1": "changeAttr",
    "filter-items-v1": "filterItems",
    "keyword-search-v1": "keywordSearch",
    "enter-promo-code-v1": "promocodeEntered",
    "sort-items-v1": "sortItems",
    "newsletter-subscription-v1": "newsletterSubscription",
    "signup-v1": "signUp",
    "login-v1": "login",
}


def _component(builder: Builder, name: str, *, required: bool = False) -> fields.Field:
    return builder.field({"$ref": f"#/components/schemas/{name}"}, required=required, name=name)


@functools.cache
def event_field() -> fields.Field:
    """One item of ``events[]``: a predefined event by its ``eventType``, else a custom event."""
    builder = Builder(load_document(DOCUMENT))
    by_type = {event_type: _component(builder, name) for event_type, name in EVENT_TYPES.items()}
    custom = _component(builder, "customEvent")

    def choose(value: Any) -> fields.Field:
        properties = value.get("properties") if isinstance(value, dict) else None
        event_type = properties.get("eventType") if isinstance(properties, dict) else None
        if event_type is not None and not isinstance(event_type, str):
            raise ValidationError({"properties": {"eventType": ["Not a valid string."]}})
        return by_type.get(event_type, custom)

    return AnyOf(list(by_type.values()) + [custom], choose=choose)


def _request_fields(builder: Builder) -> dict[str, fields.Field]:
    """What every SSAPI request carries: one user, one session, one context."""
    return {name: _component(builder, name, required=True) for name in ("user", "session", "context")}


@functools.cache
def event_request_schema() -> Schema:
    """The body of ``POST /ssapi/event``: one user and session, one context, its events."""
    declared = _request_fields(Builder(load_document(DOCUMENT)))
    declared["events"] = fields.List(event_field(), required=True)
    return Schema.from_dict(declared, name="GravityFieldEventRequest")(unknown=RAISE)


@functools.cache
def page_request_schema() -> Schema:
    """The body of ``POST /ssapi/page``: a page view, with no events."""
    return Schema.from_dict(_request_fields(Builder(load_document(DOCUMENT))), name="GravityFieldPageRequest")(
        unknown=RAISE
    )
