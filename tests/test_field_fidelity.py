"""Gravity Field fidelity (issue 9): what the relay sends Field is what the end user did, and
nothing Field would fill in by itself (the relay's IP, a new user, the section's currency, a
price of 0) -- each test names the finding it guards."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from conversion_relay.errors import ConfigurationError
from conversion_relay.sandbox.gravity_field import EVENT_PATH, PAGE_PATH, PAGE_SCHEMA, openapi_document
from conversion_relay.sandbox.schema_check import SchemaChecker
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.vendors import adapter_for
from conversion_relay.vendors.base import Skip
from conversion_relay.vendors.gravity_field import GravityFieldAdapter
from tests.conftest import field_destination
from tests.support import destination_settings, wait_for

KEY_ENV = "TEST_FIELD_API_KEY"
IP = "203.0.113.7"
UA = "Mozilla/5.0 (X11; Linux x86_64)"
ITEMS = [{"id": "SKU-1", "quantity": 2, "item_price": 25.0}, {"id": "SKU-2", "quantity": 1, "item_price": 50.0}]


def adapter(**options: Any) -> GravityFieldAdapter:
    found = adapter_for(destination_settings("field", {"vendor": "gravity_field", "api_key_env": KEY_ENV, **options},
                                             **{KEY_ENV: "k"}))  # fmt: skip
    assert isinstance(found, GravityFieldAdapter)
    return found


def canonical(name: str, custom_data: dict[str, Any] | None = None, **user: Any) -> dict[str, Any]:
    user_data = {"external_id": ["42"], "client_ip_address": IP, "client_user_agent": UA, **user}
    event: dict[str, Any] = {"event_name": name, "event_time": 1718973400, "event_id": "e-1",
                             "user_data": {k: v for k, v in user_data.items() if v is not None}}  # fmt: skip
    if custom_data is not None:
        event["custom_data"] = custom_data
    return canonical_schema().load(copy.deepcopy(event))


def reason(event: dict[str, Any], a: GravityFieldAdapter | None = None) -> str:
    with pytest.raises(Skip) as skipped:
        (a or adapter()).map_event(event)
    return skipped.value.reason


def body(event: dict[str, Any], a: GravityFieldAdapter | None = None) -> dict[str, Any]:
    a = a or adapter()
    (part,) = a.map_event(event)
    return json.loads(a.body_for(part.group, [part.body]))


# --- 1. never the relay's IP --------------------------------------------------------------------


def test_an_event_without_the_end_users_ip_is_skipped_not_placed_at_the_relay():
    """The OpenAPI (seed 003): "If not passed, the caller IP is used" -- the relay's."""
    assert reason(canonical("Lead", client_ip_address=None)) == "no_client_ip"
    assert reason(canonical("PageView", client_ip_address=None)) == "no_client_ip"


def test_without_client_ip_send_is_an_explicit_choice():
    sent = body(canonical("Lead", client_ip_address=None), adapter(without_client_ip="send"))
    assert sent["context"]["device"] == {"userAgent": UA}
    with pytest.raises(ConfigurationError, match="without_client_ip: Must be one of: skip, send"):
        adapter(without_client_ip="sometimes")


def test_an_event_without_the_browsers_user_agent_is_skipped_not_given_the_relays():
    """The OpenAPI (seed 003): without ``userAgent`` "the API gateway checks for the header in
    the HTTPS request" -- the relay's ``User-Agent``, which would make every such user a bot."""
    assert reason(canonical("Lead", client_user_agent=None)) == "no_user_agent"
    assert reason(canonical("PageView", client_user_agent=None)) == "no_user_agent"


def test_without_user_agent_send_is_an_explicit_choice():
    sent = body(canonical("Lead", client_user_agent=None), adapter(without_user_agent="send"))
    assert sent["context"]["device"] == {"ip": IP}
    with pytest.raises(ConfigurationError, match="without_user_agent: Must be one of: skip, send"):
        adapter(without_user_agent="always")


# --- 2. Field's own ids, never another vendor's ----------------------------------------------


def test_a_guest_without_any_field_id_is_skipped_not_made_a_new_user():
    assert reason(canonical("Lead", external_id=None)) == "no_user_id"


def test_a_guest_is_known_by_fields_own_cookies():
    event = canonical("Lead", external_id=None, gravity_field_user_id="slid-1", gravity_field_server_user_id="srv-1",
                      gravity_field_session_id="sl-1")  # fmt: skip
    sent = body(event)
    assert sent["user"] == {"slid": "slid-1", "slid_server": "srv-1"}
    assert sent["session"] == {"sl": "sl-1"}


def test_another_vendors_session_and_visitor_ids_are_never_sent():
    sent = body(canonical("Lead", session_id="gravity-pixel-session", visitor_id="v-1", browser_id="b-1"))
    assert sent["session"] == {}
    assert sent["user"] == {"id": "42"}
    assert "gravity-pixel-session" not in json.dumps(sent)


def test_without_user_id_send_sends_an_empty_user():
    sent = body(canonical("Lead", external_id=None), adapter(without_user_id="send"))
    assert sent["user"] == {}


# --- 3. no invented values ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Purchase", "AddToCart", "RemoveFromCart", "InitiateCheckout"])
def test_money_without_a_currency_is_skipped_not_given_the_sections_default(name):
    assert reason(canonical(name, {"value": 100.0, "contents": ITEMS})) == "no_currency"


def test_default_currency_applies_only_when_the_destination_sets_it():
    sent = body(canonical("Purchase", {"value": 100.0, "contents": ITEMS}), adapter(default_currency="eur"))
    assert sent["events"][0]["properties"]["currency"] == "EUR"


def test_a_custom_event_without_currency_leaves_value_out():
    props = body(canonical("Lead", {"value": 12.5}))["events"][0]["properties"]
    assert "value" not in props and "currency" not in props


def test_cart_items_without_price_or_quantity_are_dropped_not_sent_as_zero_or_one():
    contents = [{"id": "A", "quantity": 1}, {"id": "B", "item_price": 5.0}, ITEMS[0]]
    props = body(canonical("Purchase", {"value": 60.0, "currency": "EUR", "contents": contents}))["events"][0]
    assert props["properties"]["cart"] == [{"productId": "SKU-1", "quantity": 2, "itemPrice": 25.0}]


def test_a_purchase_value_is_not_summed_from_items_missing_a_quantity():
    contents = [{"id": "A", "item_price": 5.0}]
    assert reason(canonical("Purchase", {"currency": "EUR", "contents": contents})) == "no_items"
    assert reason(canonical("Purchase", {"currency": "EUR", "contents": [*contents, ITEMS[0]]})) == "no_value"


def test_add_to_cart_without_a_value_or_price_is_skipped_not_zero():
    assert reason(canonical("AddToCart", {"currency": "EUR", "contents": [{"id": "A", "quantity": 1}]})) == "no_value"


def test_add_to_cart_needs_a_quantity_and_remove_from_cart_leaves_it_out():
    line = [{"id": "A", "item_price": 3.0}]
    assert reason(canonical("AddToCart", {"value": 3.0, "currency": "EUR", "contents": line})) == "no_items"
    props = body(canonical("RemoveFromCart", {"value": 3.0, "currency": "EUR", "contents": line}))
    assert "quantity" not in props["events"][0]["properties"]


# --- 5. rate limit with headroom ----------------------------------------------------------------


def test_default_rate_leaves_headroom_and_above_the_documented_500_is_refused():
    assert adapter().destination.rate_limit_per_second == 250.0
    assert adapter(rate_limit_per_second=500).destination.rate_limit_per_second == 500.0
    for refused in (501, 0):
        with pytest.raises(ConfigurationError, match="rate_limit_per_second: Gravity Field allows at most 500"):
            adapter(rate_limit_per_second=refused)


# --- 6. every body the relay builds validates against the vendor's OpenAPI ------------------


VARIED = [
    ("Purchase", {"value": 100.0, "currency": "EUR", "order_id": "o-1", "contents": ITEMS}, {}),
    ("Purchase", {"value": 9.0, "currency": "USD", "contents": [*ITEMS, {"id": "x", "quantity": 1}]}, {}),
    ("AddToCart", {"currency": "EUR", "contents": ITEMS}, {}),
    ("RemoveFromCart", {"value": 3.0, "currency": "EUR", "contents": [{"id": "A"}]}, {}),
    ("AddToWishlist", {"contents": ITEMS}, {}),
    ("InitiateCheckout", {"currency": "EUR", "contents": ITEMS}, {}),
    ("Search", {"search_string": "red"}, {}),
    ("ApplyPromoCode", {"promo_code": "X"}, {}),
    ("FilterItems", {"filter_type": "size", "filter_value": 42}, {}),
    ("FilterItems", {"filter_type": "color", "filter_value": "red"}, {}),
    ("SortItems", {"sort_by": "price", "sort_order": "ASC"}, {}),
    ("ChangeAttribute", {"attribute_type": "size", "attribute_value": "XL"}, {}),
    ("CompleteRegistration", None, {"em": ["a@example.com"]}),
    ("Login", None, {"external_id": None, "gravity_field_user_id": "slid-1"}),
    ("NewsletterSignup", None, {}),
    ("Lead", {"value": 1.5, "currency": "EUR"}, {"client_user_agent": "Mozilla/5.0"}),
    ("Anything", None, {"gravity_field_session_id": "sl-1"}),
    ("PageView", None, {}),
    ("PageView", None, {"external_id": None, "gravity_field_user_id": "slid-1", "gravity_field_server_user_id": "s"}),
    ("ViewContent", {"contents": ITEMS}, {"client_user_agent": "Mozilla/5.0"}),
]


@pytest.mark.parametrize(("name", "custom_data", "user"), VARIED, ids=[f"{v[0]}-{i}" for i, v in enumerate(VARIED)])
def test_every_body_validates_with_the_projects_openapi_checker(name, custom_data, user):
    document = openapi_document()
    checker = SchemaChecker(document)
    a = adapter()
    (part,) = a.map_event(canonical(name, custom_data, **user))
    sent = json.loads(a.body_for(part.group, [part.body]))
    path = a.request_for(part.group, b"").url.removeprefix(a.destination.base_url)
    if path == PAGE_PATH:
        assert checker.check(sent, PAGE_SCHEMA) is None
    else:
        assert path == EVENT_PATH
        schema = document["paths"][EVENT_PATH]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert checker.check(sent, schema) is None


# --- 4. one refused event does not take its neighbours down -----------------------------------


def test_a_refused_field_request_is_split_until_the_refused_event_is_alone(make_stack, sandbox, field):
    """The sandbox refuses a ``sortOrder`` other than ASC or DESC (a rule the document states in
    prose, so the producer's schema lets it through) with a 422; the other events of the request
    are still delivered."""
    stack = make_stack(destinations={"field": field_destination(sandbox)})
    context = {"page": {"type": "OTHER", "data": [], "location": "x"}, "device": {"ip": IP}}
    events = [{"name": f"E{i}", "properties": {"eventType": "sort-items-v1", "sortBy": "price", "sortOrder": "ASC"}}
              for i in range(4)]  # fmt: skip
    events[2]["properties"]["sortOrder"] = "UP"
    stack.relay.enqueue_native("field", {"user": {"id": "u"}, "session": {}, "context": context, "events": events})
    stack.start_worker()
    letter = wait_for(lambda: stack.dead_letters(), what="the refused event")[0]
    stack.wait_settled("field")
    assert letter.reason == "http_422"
    assert [json.loads(p)["name"] for p in letter.parts] == ["E2"]
    assert sorted(e["event"]["name"] for e in field.events) == ["E0", "E1", "E3"]
    assert [r["event_count"] for r in field.requests] == [4, 2, 2, 1, 1]
    assert stack.counters("field")["split"] == 2
