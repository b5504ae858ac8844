"""Gravity Conversions API (trygravity.ai): ``POST /gateway/events``.

- Mapping: the canonical event is this vendor's event shape (stored events hold no nulls);
  fields other vendors need (page, IP, browser id, behaviour details) are dropped.  Behaviour
  events are skipped unless ``skip_events`` says otherwise.  ``test_event_code`` is a
  request-level field, so it is the group: test and live events never share a request.
- Batching: ``{"data": [...]}`` with at most 1,000 events; the byte limit is not documented and
  defaults to 1 MB (``max_bytes``).
- Authentication: ``Authorization: Bearer <key>``.  The API also takes ``?api_key=``, which the
  relay never uses: URLs end up in logs.
- Money: the vendor reads a value without a currency as USD (its documented default), which
  would be an invented currency for a shop in euros.  A value without a currency takes the
  destination's ``default_currency`` when it sets one (there is no default in code); otherwise
  every money field (``value``, ``predicted_ltv``, line items' ``item_price``) is left out and
  the conversion is sent without a value, which the vendor accepts.  A missing value is never
  sent as 0.
- Response: one result per event.  ``ok``, ``duplicate``, ``test_ok`` and ``skipped`` are done;
  ``error`` dead-letters that event alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from marshmallow import ValidationError

from conversion_relay.outcomes import DONE_STATUSES, Accepted, Outcome, RetryLater, excerpt_of
from conversion_relay.schemas.canonical import BEHAVIOUR_EVENT_NAMES, canonical_many_schema
from conversion_relay.schemas.fields import Currency
from conversion_relay.vendors.base import Part, Request, VendorAdapter, encode
from conversion_relay.vendors.destination import DestinationSchema

#: Fields of a Conversions API event; anything else in a canonical event is for other vendors.
EVENT_FIELDS = (
    "event_name",
    "event_time",
    "event_id",
    "action_source",
    "event_source_url",
    "user_data",
    "client_context",
    "custom_data",
)
USER_DATA_FIELDS = frozenset(
    {"grclid", "grcpid", "grpuid", "gradid", "grsig", "graid", "visitor_id", "session_id", "client_user_agent",
     "em", "ph", "fn", "ln", "external_id"}
)  # fmt: skip
CUSTOM_DATA_FIELDS = frozenset(
    {"value", "currency", "order_id", "contents", "content_name", "content_category", "predicted_ltv"}
)

#: Money fields of ``custom_data``, in the event's currency; ``item_price`` is in each line item.
MONEY_FIELDS = ("value", "predicted_ltv")


class GravityCapiSettingsSchema(DestinationSchema):
    #: The currency of values that come without one.  Unset, such values are left out rather
    #: than sent for the vendor to read as USD.
    default_currency = Currency()


class GravityCapiAdapter(VendorAdapter):
    vendor = "gravity_capi"
    title = "Gravity Conversions API"
    default_destination_name = "gravity"
    default_base_url = "https://api.trygravity.ai"
    #: Documented: up to 1,000 events per request; no byte limit is documented (1 MB assumed).
    max_events_limit = 1000
    max_events_documented = True
    default_max_events = 1000
    default_max_bytes = 1_000_000
    #: Behaviour events are not conversions; ``skip_events = []`` sends them as custom events.
    default_skip_events = BEHAVIOUR_EVENT_NAMES
    settings_schema = GravityCapiSettingsSchema

    def __init__(self, destination: Any) -> None:
        super().__init__(destination)
        self.default_currency: str | None = destination.options.get("default_currency")

    def map_event(self, event: Mapping[str, Any]) -> list[Part]:
        payload = {key: event[key] for key in EVENT_FIELDS if key in event}
        for key, known in (("user_data", USER_DATA_FIELDS), ("custom_data", CUSTOM_DATA_FIELDS)):
            if key in payload:
                payload[key] = {k: v for k, v in payload[key].items() if k in known}
        if "custom_data" in payload:
            payload["custom_data"] = self._money(payload["custom_data"])
        group = event.get("test_event_code") or self.destination.test_event_code or ""
        return [Part(group, encode(payload))]

    def _money(self, custom_data: dict[str, Any]) -> dict[str, Any]:
        """Money only with a currency the shop gave (the event's or ``default_currency``): the
        vendor would read a bare amount as USD (see the module docstring)."""
        if "currency" in custom_data:
            return custom_data
        contents = custom_data.get("contents") or []
        priced = any("item_price" in item for item in contents)
        if not priced and not any(key in custom_data for key in MONEY_FIELDS):
            return custom_data
        if self.default_currency:
            return {**custom_data, "currency": self.default_currency}
        out = {k: v for k, v in custom_data.items() if k not in MONEY_FIELDS}
        if priced:
            out["contents"] = [{k: v for k, v in item.items() if k != "item_price"} for item in contents]
        return out

    def load_native(
        self, payload: Any, operation: str | None, *, phone_region: str | None = None
    ) -> list[dict[str, Any]]:
        """A request body (``{"data": [...], "test_event_code": ...}``), an event or a list of
        events, loaded with the canonical schema (this vendor's shape), so PII is hashed."""
        test_event_code = None
        if isinstance(payload, Mapping) and "data" in payload:
            unknown = set(payload) - {"data", "test_event_code"}
            if unknown:
                raise ValidationError({key: ["Unknown field."] for key in sorted(unknown)})
            test_event_code = payload.get("test_event_code")
            payload = payload["data"]
        events = payload if isinstance(payload, list) else [payload]
        loaded = canonical_many_schema(phone_region).load(events)
        if test_event_code:
            for event in loaded:
                event.setdefault("test_event_code", test_event_code)
        return loaded

    def map_native(self, item: Mapping[str, Any], operation: str | None) -> list[Part]:
        return self.map_event(item)

    def envelope(self, group: str) -> tuple[bytes, bytes]:
        if group:
            return b'{"data":[', b'],"test_event_code":' + encode(group) + b"}"
        return b'{"data":[', b"]}"

    def request_for(self, group: str, body: bytes) -> Request:
        return Request(
            method="POST",
            url=f"{self.destination.base_url}/gateway/events",
            headers={
                "Authorization": f"Bearer {self.destination.api_key}",
                "Content-Type": "application/json",
            },
            body=body,
        )

    def interpret_success(self, status: int, body: bytes, parts: list[bytes]) -> Outcome:
        try:
            document = orjson.loads(body)
            results = document["results"]
        except (ValueError, KeyError, TypeError):
            results = None
        results = _in_request_order(results, parts)
        if results is None:
            # Re-sending is safe: the vendor deduplicates on event_id + event_name.
            return RetryLater(reason="unreadable_response", status=status, excerpt=excerpt_of(body))
        statuses: list[str] = []
        errors: dict[int, str] = {}
        for index, result in enumerate(results):
            state = result.get("status") if isinstance(result, dict) else None
            if state in DONE_STATUSES:
                statuses.append(state)
                continue
            statuses.append("error")
            if state == "error":
                errors[index] = str(result.get("error") or "error without a message")[:300]
            else:
                errors[index] = f"unknown result status {state!r}"
        return Accepted(statuses=statuses, errors=errors)


def _in_request_order(results: Any, parts: list[bytes]) -> list[Any] | None:
    """The results aligned with the parts, or ``None`` when that cannot be done with certainty.

    Positions are trusted when every result that names an ``event_id`` sits at that event's
    position; otherwise results are matched on ``event_id`` (in order, so a repeated id maps to
    its own result).
    """
    if not isinstance(results, list):
        return None
    ids = [orjson.loads(part).get("event_id") for part in parts]
    result_ids = [r.get("event_id") if isinstance(r, dict) else None for r in results]
    if len(results) == len(parts) and all(rid is None or rid == eid for rid, eid in zip(result_ids, ids)):
        return results
    waiting: dict[str, list[Any]] = {}
    for result_id, result in zip(result_ids, results):
        if isinstance(result_id, str) and result_id:
            waiting.setdefault(result_id, []).append(result)
    ordered = []
    for event_id in ids:
        queue = waiting.get(event_id) if isinstance(event_id, str) else None
        if not queue:
            return None
        ordered.append(queue.pop(0))
    return ordered
