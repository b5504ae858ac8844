"""Reading a stored canonical event: the values several vendors derive the same way.

Stored events are loaded by the canonical schema, so every value here is already checked and
no field is null; a missing field is simply absent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

Event = Mapping[str, Any]


def user_data(event: Event) -> Mapping[str, Any]:
    return event.get("user_data") or {}


def custom_data(event: Event) -> Mapping[str, Any]:
    return event.get("custom_data") or {}


def page(event: Event) -> Mapping[str, Any]:
    return event.get("page") or {}


def user_id(event: Event) -> str | None:
    """The shop's own id of the user: the first ``external_id``."""
    ids = user_data(event).get("external_id") or []
    return ids[0] if ids else None


def reco_cookie_id(event: Event) -> str | None:
    """Gravity RECO's cookie id: ``reco_cookie_id`` only, since another vendor's browser id
    (the Gravity pixel's ``visitor_id``) names a visitor RECO has never seen."""
    return user_data(event).get("reco_cookie_id")


def session_id(event: Event) -> str | None:
    return user_data(event).get("session_id")


def ip_address(event: Event) -> str | None:
    return user_data(event).get("client_ip_address")


def user_agent(event: Event) -> str | None:
    return user_data(event).get("client_user_agent")


def email_hash(event: Event) -> str | None:
    """SHA-256 hex of the first e-mail address (trimmed, lower-cased) — never the address."""
    hashes = user_data(event).get("em") or []
    return hashes[0] if hashes else None


def url(event: Event) -> str | None:
    """Where the event happened: ``page.location``, else ``event_source_url``."""
    return page(event).get("location") or event.get("event_source_url")


def referrer(event: Event) -> str | None:
    return page(event).get("referrer")


def line_items(event: Event) -> list[Mapping[str, Any]]:
    return list(custom_data(event).get("contents") or [])


def value(event: Event) -> float | None:
    """``custom_data.value``, else the sum of the line items when every one has a price and a
    quantity: a missing quantity is not taken as one, a missing price not as zero (None)."""
    data = custom_data(event)
    if data.get("value") is not None:
        return float(data["value"])
    items = line_items(event)
    if items and all("item_price" in item and "quantity" in item for item in items):
        return round(sum(item["item_price"] * item["quantity"] for item in items), 2)
    return None


def order_id(event: Event) -> str:
    """The order or conversion id vendors deduplicate on: ``order_id``, else ``event_id``."""
    return custom_data(event).get("order_id") or event["event_id"]


def event_datetime(event: Event) -> dt.datetime:
    return dt.datetime.fromtimestamp(event["event_time"], dt.UTC)
