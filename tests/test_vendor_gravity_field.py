"""Unit tests of the Gravity Field SSAPI adapter (conversion_relay.vendors.gravity_field)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from conversion_relay.outcomes import Accepted, Rejected, RetryLater
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.schemas.gravity_field import event_request_schema, page_request_schema
from conversion_relay.vendors import adapter_classes, adapter_for
from conversion_relay.vendors.base import Part, Skip
from conversion_relay.vendors.batching import Batcher
from conversion_relay.vendors.destination import DestinationSettings
from conversion_relay.vendors.gravity_field import GravityFieldAdapter
from tests.support import destination_settings

FIXTURES = Path(__file__).parent / "fixtures"
API_KEY = "field-section-key-0123"
KEY_ENV = "TEST_FIELD_API_KEY"
EVENT_TIME = 1718973400  # 2024-06-21 12:36:40 UTC
EVENT_TIME_ISO = "2024-06-21T12:36:40.000+00:00"
URL = "https://shop.example/checkout/thank-you"
EMAIL = "test+dev@example.com"
EMAIL_SHA256 = hashlib.sha256(EMAIL.encode()).hexdigest()


def destination(**options: Any) -> DestinationSettings:
    table = {"vendor": "gravity_field", "api_key_env": KEY_ENV, **options}
    return destination_settings("field", table, **{KEY_ENV: API_KEY})


def adapter(**options: Any) -> GravityFieldAdapter:
    found = adapter_for(destination(**options))
    assert isinstance(found, GravityFieldAdapter)
    return found


UA = "Mozilla/5.0 (X11; Linux x86_64)"


def canonical(name: str, custom_data: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A canonical event loaded as the producer loads it."""
    event: dict[str, Any] = {
        "event_name": name,
        "event_time": EVENT_TIME,
        "event_id": "evt-1",
        "event_source_url": URL,
        "user_data": {
            "external_id": ["42"],
            "gravity_field_session_id": "sl-1",
            "client_ip_address": "203.0.113.7",
            "client_user_agent": UA,
            "em": [" Test+Dev@Example.com "],
        },
    }
    if custom_data is not None:
        event["custom_data"] = custom_data
    event.update(fields)
    return canonical_schema().load(copy.deepcopy(event))


def only_part(event: dict[str, Any], a: GravityFieldAdapter | None = None) -> Part:
    parts = (a or adapter()).map_event(event)
    assert len(parts) == 1
    return parts[0]


def field_event(event: dict[str, Any], a: GravityFieldAdapter | None = None) -> dict[str, Any]:
    """The Field event (``{name, properties}``) one canonical event maps to."""
    p = only_part(event, a)
    assert p.group.startswith("event:")
    return json.loads(p.body)


def properties(event: dict[str, Any], a: GravityFieldAdapter | None = None) -> dict[str, Any]:
    return field_event(event, a)["properties"]


def request_body(p: Part, a: GravityFieldAdapter | None = None) -> dict[str, Any]:
    """The request document the part travels in, alone."""
    a = a or adapter()
    return json.loads(a.body_for(p.group, [p.body]))


def context_page(event: dict[str, Any], a: GravityFieldAdapter | None = None) -> dict[str, Any]:
    return request_body(only_part(event, a), a)["context"]["page"]


ITEMS = [
    {"id": "SKU-1", "quantity": 2, "item_price": 25.0, "title": "Shirt"},
    {"id": "SKU-2", "quantity": 1, "item_price": 50.0},
]

#: One canonical event per mapping rule: name, custom_data, expected eventType (None: custom).
MAPPED = [
    ("Purchase", {"value": 100.0, "currency": "EUR", "order_id": "o-1", "contents": ITEMS}, "purchase-v1"),
    ("AddToCart", {"currency": "EUR", "contents": ITEMS[:1]}, "add-to-cart-v1"),
    ("RemoveFromCart", {"currency": "EUR", "contents": ITEMS[:1]}, "remove-from-cart-v1"),
    ("AddToWishlist", {"contents": ITEMS[1:]}, "add-to-wishlist-v1"),
    ("InitiateCheckout", {"currency": "EUR", "contents": ITEMS}, "sync-cart-v1"),
    ("Search", {"search_string": "red shoes"}, "keyword-search-v1"),
    ("ApplyPromoCode", {"promo_code": "SUMMER10"}, "enter-promo-code-v1"),
    ("FilterItems", {"filter_type": "color", "filter_value": "red"}, "filter-items-v1"),
    ("FilterItems", {"filter_type": "price", "filter_value": 30}, "filter-items-v1"),
    ("SortItems", {"sort_by": "price", "sort_order": "DESC"}, "sort-items-v1"),
    ("ChangeAttribute", {"attribute_type": "size", "attribute_value": "XL"}, "change-attribute-v1"),
    ("CompleteRegistration", None, "signup-v1"),
    ("Login", None, "login-v1"),
    ("NewsletterSignup", None, "newsletter-subscription-v1"),
    ("Lead", {"value": 12.5, "currency": "EUR"}, None),
    ("Subscribe", None, None),
    ("DownloadWhitepaper", {"value": 3}, None),
]
MAPPED_IDS = [f"{name}-{index}" for index, (name, _, _) in enumerate(MAPPED)]


# --- registry and settings --------------------------------------------------------------------


def test_adapter_is_registered_under_its_vendor_name():
    assert adapter_classes()["gravity_field"] is GravityFieldAdapter


def test_destination_defaults_come_from_the_adapter():
    d = destination()
    assert d.base_url == "https://evs.gravityfield.ai"
    assert d.max_events == 50
    assert d.rate_limit_per_second == 250.0
    assert d.options == {}


# --- event names to Field events ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "custom_data", "event_type"), MAPPED, ids=MAPPED_IDS)
def test_each_event_name_maps_to_one_field_event_of_its_type(name, custom_data, event_type):
    body = field_event(canonical(name, custom_data))
    assert body["name"] == name
    assert body["properties"].get("eventType") == event_type
    assert body["properties"]["event_time"] == EVENT_TIME_ISO


@pytest.mark.parametrize(("name", "custom_data", "event_type"), MAPPED, ids=MAPPED_IDS)
def test_every_mapped_event_request_validates_against_the_vendor_schema(name, custom_data, event_type):
    a = adapter()
    p = only_part(canonical(name, custom_data), a)
    document = json.loads(a.body_for(p.group, [p.body]))
    loaded = event_request_schema().load(document)
    assert loaded["events"][0]["name"] == name
    assert set(document) == {"user", "session", "context", "events"}


def test_all_mapped_events_of_one_user_and_page_validate_as_one_request():
    a = adapter()
    events = [canonical(name, custom_data) for name, custom_data, _ in MAPPED if name not in ("Search",)]
    parts = [p for event in events for p in a.map_event(event)]
    assert len({p.group for p in parts}) == 1
    document = json.loads(a.body_for(parts[0].group, [p.body for p in parts]))
    loaded = event_request_schema().load(document)
    assert len(loaded["events"]) == len(events)


def test_purchase_carries_value_transaction_id_cart_and_currency():
    event = canonical("Purchase", {"value": 100.0, "currency": "EUR", "order_id": "o-1", "contents": ITEMS})
    assert properties(event) == {
        "eventType": "purchase-v1",
        "value": 100.0,
        "uniqueTransactionId": "o-1",
        "cart": [
            {"productId": "SKU-1", "quantity": 2, "itemPrice": 25.0},
            {"productId": "SKU-2", "quantity": 1, "itemPrice": 50.0},
        ],
        "currency": "EUR",
        "event_time": EVENT_TIME_ISO,
    }


def test_purchase_without_order_id_uses_the_event_id_as_transaction_id():
    event = canonical("Purchase", {"value": 10.0, "currency": "EUR", "contents": ITEMS})
    assert properties(event)["uniqueTransactionId"] == "evt-1"


def test_purchase_value_defaults_to_the_sum_of_line_items():
    event = canonical("Purchase", {"currency": "EUR", "contents": ITEMS})
    assert properties(event)["value"] == 100.0


def test_add_to_cart_uses_the_first_line_item():
    event = canonical("AddToCart", {"currency": "EUR", "contents": ITEMS})
    assert properties(event) == {
        "eventType": "add-to-cart-v1",
        "value": 50.0,  # first item's price times its quantity
        "quantity": 2,
        "productId": "SKU-1",
        "currency": "EUR",
        "event_time": EVENT_TIME_ISO,
    }


def test_add_to_cart_value_prefers_the_events_value():
    event = canonical("AddToCart", {"value": 42.0, "currency": "EUR", "contents": ITEMS})
    props = properties(event)
    assert props["value"] == 42.0
    assert props["quantity"] == 2


def test_remove_from_cart_maps_to_remove_from_cart_v1():
    line = {"id": "SKU-2", "quantity": 3, "item_price": 2.0}
    props = properties(canonical("RemoveFromCart", {"currency": "EUR", "contents": [line]}))
    assert props == {
        "eventType": "remove-from-cart-v1",
        "value": 6.0,
        "quantity": 3,
        "productId": "SKU-2",
        "currency": "EUR",
        "event_time": EVENT_TIME_ISO,
    }


def test_add_to_wishlist_names_the_first_product():
    props = properties(canonical("AddToWishlist", {"contents": ITEMS}))
    assert props == {"eventType": "add-to-wishlist-v1", "productId": "SKU-1", "event_time": EVENT_TIME_ISO}


def test_initiate_checkout_syncs_the_whole_cart():
    props = properties(canonical("InitiateCheckout", {"currency": "EUR", "contents": ITEMS}))
    assert props["eventType"] == "sync-cart-v1"
    assert [line["productId"] for line in props["cart"]] == ["SKU-1", "SKU-2"]
    assert props["currency"] == "EUR"


def test_search_sends_the_search_string_as_keywords():
    props = properties(canonical("Search", {"search_string": "red shoes"}))
    assert props == {"eventType": "keyword-search-v1", "keywords": "red shoes", "event_time": EVENT_TIME_ISO}


def test_apply_promo_code_sends_the_code():
    props = properties(canonical("ApplyPromoCode", {"promo_code": "SUMMER10"}))
    assert props == {"eventType": "enter-promo-code-v1", "code": "SUMMER10", "event_time": EVENT_TIME_ISO}


def test_filter_items_with_a_string_value_sends_filter_string_value():
    props = properties(canonical("FilterItems", {"filter_type": "color", "filter_value": "red"}))
    assert props["filterType"] == "color"
    assert props["filterStringValue"] == "red"
    assert "filterNumericValue" not in props


@pytest.mark.parametrize("number", [30, 12.5])
def test_filter_items_with_a_numeric_value_sends_filter_numeric_value(number):
    props = properties(canonical("FilterItems", {"filter_type": "price", "filter_value": number}))
    assert props["filterNumericValue"] == number
    assert "filterStringValue" not in props


def test_sort_items_sends_sort_by_and_order():
    props = properties(canonical("SortItems", {"sort_by": "price", "sort_order": "ASC"}))
    assert props == {"eventType": "sort-items-v1", "sortBy": "price", "sortOrder": "ASC", "event_time": EVENT_TIME_ISO}


def test_change_attribute_sends_type_and_value():
    props = properties(canonical("ChangeAttribute", {"attribute_type": "size", "attribute_value": "XL"}))
    assert props["attributeType"] == "size"
    assert props["attributeValue"] == "XL"


@pytest.mark.parametrize(("name", "event_type"), [("CompleteRegistration", "signup-v1"), ("Login", "login-v1")])
def test_signup_and_login_carry_cuid_cuid_type_and_the_stored_email_hash(name, event_type):
    event = canonical(name)
    assert event["user_data"]["em"] == [EMAIL_SHA256]  # the producer stored the hash only
    props = properties(event)
    assert props == {
        "eventType": event_type,
        "cuid": "42",
        "cuidType": "customer_id",
        "hashedEmail": EMAIL_SHA256,
        "event_time": EVENT_TIME_ISO,
    }


def test_cuid_type_comes_from_the_destination_option():
    props = properties(canonical("Login"), adapter(cuid_type="account_id"))
    assert props["cuidType"] == "account_id"


def test_login_without_user_id_or_email_sends_only_the_event_type():
    event = canonical(
        "Login",
        user_data={"client_ip_address": "203.0.113.7", "client_user_agent": UA, "gravity_field_user_id": "slid-1"},
    )
    assert properties(event) == {"eventType": "login-v1", "event_time": EVENT_TIME_ISO}


def test_signup_with_email_only_has_no_cuid_type():
    user_data = {
        "em": [EMAIL],
        "client_ip_address": "203.0.113.7",
        "client_user_agent": UA,
        "gravity_field_user_id": "slid-1",
    }
    event = canonical("CompleteRegistration", user_data=user_data)
    props = properties(event)
    assert props["hashedEmail"] == EMAIL_SHA256
    assert "cuid" not in props
    assert "cuidType" not in props


def test_newsletter_signup_sends_cuid_without_type_or_email():
    props = properties(canonical("NewsletterSignup"))
    assert props == {"eventType": "newsletter-subscription-v1", "cuid": "42", "event_time": EVENT_TIME_ISO}


@pytest.mark.parametrize("name", ["Lead", "StartTrial", "DownloadWhitepaper"])
def test_lead_and_custom_names_become_custom_events_with_value(name):
    body = field_event(canonical(name, {"value": 12.5, "currency": "EUR"}))
    assert body == {
        "name": name,
        "properties": {"value": 12.5, "currency": "EUR", "event_time": EVENT_TIME_ISO},
    }


def test_custom_event_value_comes_from_line_items():
    props = properties(
        canonical("Lead", {"currency": "EUR", "contents": [{"id": "a", "item_price": 4.0, "quantity": 3}]})
    )
    assert props["value"] == 12.0
    assert "eventType" not in props


def test_custom_event_without_value_has_only_event_time():
    assert properties(canonical("Contact")) == {"event_time": EVENT_TIME_ISO}


@pytest.mark.parametrize(
    ("name", "custom_data", "reason"),
    [
        ("AddToCart", None, "no_items"),
        ("AddToCart", {"value": 10.0}, "no_items"),
        ("RemoveFromCart", {"value": 10.0}, "no_items"),
        ("AddToWishlist", {"content_name": "x"}, "no_items"),
        ("InitiateCheckout", {"currency": "EUR"}, "no_items"),
        ("Purchase", None, "no_value"),
        ("Purchase", {"currency": "EUR", "contents": [{"id": "a", "quantity": 1}]}, "no_items"),
        ("Search", None, "no_search_string"),
        ("Search", {"content_category": "shoes"}, "no_search_string"),
        ("ApplyPromoCode", {"value": 1.0}, "no_promo_code"),
        ("FilterItems", {"filter_type": "color"}, "no_filter_value"),
        ("FilterItems", {"filter_value": "red"}, "no_filter_type"),
        ("SortItems", {"sort_by": "price"}, "no_sort_order"),
        ("ChangeAttribute", {"attribute_type": "size"}, "no_attribute_value"),
    ],
)
def test_events_the_vendor_cannot_express_are_skipped_with_a_reason(name, custom_data, reason):
    with pytest.raises(Skip) as skipped:
        adapter().map_event(canonical(name, custom_data))
    assert skipped.value.reason == reason


# --- page views ---------------------------------------------------------------------------------


def test_page_view_becomes_a_full_page_request_body():
    a = adapter()
    (p,) = a.map_event(canonical("PageView"))
    assert p.group == "page"
    body = json.loads(p.body)
    assert body == {
        "user": {"id": "42"},
        "session": {"sl": "sl-1"},
        "context": {
            "page": {"type": "OTHER", "data": [], "location": URL},
            "device": {"userAgent": "Mozilla/5.0 (X11; Linux x86_64)", "ip": "203.0.113.7"},
        },
    }
    page_request_schema().load(body)
    assert a.body_for("page", [p.body]) == p.body


def test_view_content_is_a_product_page_with_the_first_sku():
    (p,) = adapter().map_event(canonical("ViewContent", {"contents": ITEMS}))
    assert p.group == "page"
    body = json.loads(p.body)
    assert body["context"]["page"]["type"] == "PRODUCT"
    assert body["context"]["page"]["data"] == ["SKU-1"]
    page_request_schema().load(body)


@pytest.mark.parametrize(
    "page",
    [None, {"type": "homepage"}, {"type": "CART"}, {"type": "category"}, {"type": "search"}, {"language": "de_DE"}],
)
def test_every_page_body_validates_against_the_page_schema(page):
    extra = {"page": page} if page else {}
    event = canonical(
        "PageView",
        {"contents": ITEMS, "content_category": "shoes", "search_string": "red"},
        **extra,
    )
    (p,) = adapter().map_event(event)
    loaded = page_request_schema().load(json.loads(p.body))
    assert loaded["context"]["page"]["location"] == URL


@pytest.mark.parametrize("name", ["PageView", "ViewContent"])
def test_page_views_option_false_skips_page_and_product_views(name):
    with pytest.raises(Skip) as skipped:
        adapter(page_views=False).map_event(canonical(name, {"contents": ITEMS}))
    assert skipped.value.reason == "page_views_off"


def test_page_views_option_false_still_maps_other_events():
    assert len(adapter(page_views=False).map_event(canonical("Search", {"search_string": "x"}))) == 1


# --- context ------------------------------------------------------------------------------------


def test_explicit_product_page_takes_the_first_sku():
    page = context_page(canonical("AddToCart", {"currency": "EUR", "contents": ITEMS}, page={"type": "product"}))
    assert page["type"] == "PRODUCT"
    assert page["data"] == ["SKU-1"]


def test_cart_page_takes_all_skus():
    page = context_page(canonical("InitiateCheckout", {"currency": "EUR", "contents": ITEMS}, page={"type": "cart"}))
    assert page == {"type": "CART", "data": ["SKU-1", "SKU-2"], "location": URL}


def test_category_page_takes_the_content_category():
    page = context_page(canonical("Lead", {"content_category": "Shoes"}, page={"type": "CATEGORY"}))
    assert page["data"] == ["Shoes"]


def test_search_event_context_is_a_search_page_with_the_query():
    page = context_page(canonical("Search", {"search_string": "red shoes"}))
    assert page["type"] == "SEARCH"
    assert page["data"] == ["red shoes"]


def test_homepage_and_unknown_data_are_empty_lists():
    assert context_page(canonical("Lead", page={"type": "HOMEPAGE"}))["data"] == []
    assert context_page(canonical("Lead"))["data"] == []


def test_explicit_page_data_is_kept():
    page = context_page(canonical("Lead", {"contents": ITEMS}, page={"type": "product", "data": ["other"]}))
    assert page["data"] == ["other"]


def test_page_location_language_and_referrer_come_from_the_page():
    event = canonical(
        "Lead",
        page={"location": "/app/checkout", "language": "de_DE", "referrer": "https://search.example/?q=x"},
    )
    page = context_page(event)
    assert page == {
        "type": "OTHER",
        "data": [],
        "location": "/app/checkout",
        "lng": "de_DE",
        "referrer": "https://search.example/?q=x",
    }


def test_location_defaults_to_the_event_source_url():
    assert context_page(canonical("Lead"))["location"] == URL


def test_location_without_any_url_is_the_default_page_location_option():
    event = canonical("Lead", event_source_url=None)
    assert "event_source_url" not in event
    assert context_page(event, adapter(default_page_location="app://checkout"))["location"] == "app://checkout"
    assert context_page(event)["location"] == "server"


def test_device_carries_the_end_users_ip_and_user_agent():
    body = request_body(only_part(canonical("Lead")))
    assert body["context"]["device"] == {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)"}


def test_device_keeps_only_what_is_known_and_is_left_out_without_either():
    a = adapter(without_user_agent="send")
    ip_only = canonical("Lead", user_data={"client_ip_address": "2001:DB8::0001", "external_id": ["42"]})
    assert request_body(only_part(ip_only, a), a)["context"]["device"] == {"ip": "2001:db8::1"}
    nothing = canonical("Lead", user_data={"external_id": ["42"]})
    a = adapter(without_client_ip="send", without_user_agent="send")
    assert "device" not in request_body(only_part(nothing, a), a)["context"]


def test_user_id_is_the_first_external_id_and_session_fields_own_cookie():
    user_data = {
        "external_id": ["7", "8"],
        "gravity_field_session_id": "sl-9",
        "client_ip_address": "203.0.113.7",
        "client_user_agent": UA,
    }
    body = request_body(only_part(canonical("Lead", user_data=user_data)))
    assert body["user"] == {"id": "7"}
    assert body["session"] == {"sl": "sl-9"}


def test_unknown_user_and_session_are_empty_objects_when_the_destination_sends_them():
    a = adapter(without_user_id="send")
    body = request_body(
        only_part(canonical("Lead", user_data={"client_ip_address": "203.0.113.7", "client_user_agent": UA}), a), a
    )
    assert body["user"] == {}
    assert body["session"] == {}
    event_request_schema().load(body)


@pytest.mark.parametrize(
    ("seconds", "iso"),
    [(EVENT_TIME, EVENT_TIME_ISO), (1_000_000_000, "2001-09-09T01:46:40.000+00:00")],
)
def test_event_time_is_iso_with_milliseconds_and_utc_offset(seconds, iso):
    assert properties(canonical("Lead", event_time=seconds))["event_time"] == iso


# --- grouping and batching ----------------------------------------------------------------------


def test_events_of_one_user_session_and_context_share_a_group():
    a = adapter()
    first = only_part(canonical("AddToCart", {"currency": "EUR", "contents": ITEMS}), a)
    second = only_part(canonical("Purchase", {"value": 1.0, "currency": "EUR", "contents": ITEMS}, event_id="evt-2"), a)
    assert first.group == second.group
    document = json.loads(a.body_for(first.group, [first.body, second.body]))
    assert [e["name"] for e in document["events"]] == ["AddToCart", "Purchase"]
    event_request_schema().load(document)


@pytest.mark.parametrize(
    "change",
    [
        {
            "user_data": {
                "external_id": ["43"],
                "gravity_field_session_id": "sl-1",
                "client_ip_address": "203.0.113.7",
                "client_user_agent": UA,
            }
        },
        {
            "user_data": {
                "external_id": ["42"],
                "gravity_field_session_id": "sl-2",
                "client_ip_address": "203.0.113.7",
                "client_user_agent": UA,
            }
        },
        {"event_source_url": "https://shop.example/other-page"},
        {"page": {"type": "CART"}},
    ],
)
def test_a_different_user_session_or_page_gets_a_different_group(change):
    a = adapter()
    base = canonical(
        "Lead",
        user_data={
            "external_id": ["42"],
            "gravity_field_session_id": "sl-1",
            "client_ip_address": "203.0.113.7",
            "client_user_agent": UA,
        },
    )
    other = canonical("Lead", **{"user_data": base["user_data"], **change})
    assert only_part(base, a).group != only_part(other, a).group


def test_group_does_not_depend_on_key_order():
    a = adapter()
    one = canonical("Lead", page={"type": "CART", "location": "x", "referrer": "y"})
    two = canonical("Lead", page={"referrer": "y", "location": "x", "type": "CART"})
    assert only_part(one, a).group == only_part(two, a).group


def test_page_requests_carry_one_part_and_event_requests_max_events():
    a = adapter(max_events=20)
    assert a.max_parts_for("page") == 1
    group = only_part(canonical("Lead"), a).group
    assert a.max_parts_for(group) == 20


def test_envelope_size_matches_the_built_body():
    a = adapter()
    p = only_part(canonical("Lead"), a)
    assert a.envelope_size(p.group) == len(a.body_for(p.group, [p.body])) - len(p.body)
    assert a.envelope_size("page") == 0


def test_batcher_sends_page_views_one_per_request_and_events_together():
    a = adapter()
    batcher = Batcher(
        max_events=a.destination.max_events,
        max_bytes=a.destination.max_bytes,
        envelope_size=a.envelope_size,
        max_events_for=a.max_parts_for,
    )
    ready = []
    for index, name in enumerate(["PageView", "Lead", "PageView", "Contact"]):
        for p in a.map_event(canonical(name, event_id=f"e-{index}")):
            ready += batcher.add(p.group, p.body, f"s:{index}", 0.0)
    assert [chunk.group for chunk in ready] == ["page", "page"]
    (events,) = batcher.drain()
    assert len(events.parts) == 2
    event_request_schema().load(json.loads(a.body_for(events.group, events.parts)))


# --- requests -----------------------------------------------------------------------------------


def test_event_request_posts_to_ssapi_event_with_bearer_key():
    a = adapter()
    p = only_part(canonical("Lead"), a)
    body = a.body_for(p.group, [p.body])
    request = a.request_for(p.group, body)
    assert request.method == "POST"
    assert request.url == "https://evs.gravityfield.ai/ssapi/event"
    assert request.headers == {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    assert request.body == body
    assert API_KEY not in request.url
    assert not request.params


def test_page_request_posts_to_ssapi_page():
    a = adapter(base_url="http://127.0.0.1:8765/gravity-field/")
    request = a.request_for("page", b"{}")
    assert request.url == "http://127.0.0.1:8765/gravity-field/ssapi/page"


def test_basic_auth_option_encodes_key_and_colon():
    request = adapter(auth="basic").request_for("page", b"{}")
    expected = base64.b64encode(f"{API_KEY}:".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert base64.b64decode(request.headers["Authorization"].split()[1]) == f"{API_KEY}:".encode()


# --- responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b'{"user":{"slid":"abc"},"session":{"sl":null}}'), (204, b""), (200, b"not json")],
)
def test_success_responses_mark_every_part_ok(status, body):
    outcome = adapter().interpret(status, {}, body, [b"{}", b"{}", b"{}"])
    assert outcome == Accepted(statuses=["ok", "ok", "ok"])


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b'{"message":"access token missing or invalid"}'),
        (422, b'{"code":422,"message":"events[0].properties.cart is required","type":"validation"}'),
    ],
)
def test_401_and_422_are_rejected_with_the_vendors_message(status, body):
    outcome = adapter().interpret(status, {}, body, [b"{}"])
    assert outcome == Rejected(reason=f"http_{status}", status=status, excerpt=body.decode())


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_and_server_errors_retry_later(status):
    outcome = adapter().interpret(status, {"Retry-After": "7"}, b"busy", [b"{}"])
    assert outcome == RetryLater(reason=f"http_{status}", status=status, retry_after_seconds=7.0, excerpt="busy")


# --- vendor-native payloads ---------------------------------------------------------------------


def fixture() -> dict[str, Any]:
    return json.loads((FIXTURES / "gravity_field" / "purchase_request.json").read_text())


def native_body(items: list[dict[str, Any]], a: GravityFieldAdapter, operation: str | None = None) -> Any:
    parts = [p for item in items for p in a.map_native(item, operation)]
    assert len({p.group for p in parts}) == 1
    return json.loads(a.body_for(parts[0].group, [p.body for p in parts]))


def only_group_count(items: list[dict[str, Any]], a: GravityFieldAdapter) -> int:
    return len({p.group for item in items for p in a.map_native(item, None)})


def test_native_fixture_loads_one_item_per_event_and_rebuilds_the_same_body():
    a = adapter()
    items = a.load_native(fixture(), None)
    assert len(items) == 1
    assert native_body(items, a) == fixture()


def test_native_items_survive_the_stream_encoding():
    a = adapter()
    items = json.loads(json.dumps(a.load_native(fixture(), "event")))
    assert native_body(items, a) == fixture()


def test_native_body_with_several_events_gives_one_item_each():
    a = adapter()
    document = fixture()
    document["events"].append({"name": "Newsletter", "properties": {"eventType": "newsletter-subscription-v1"}})
    document["events"].append({"name": "Clicked banner", "properties": {"customProperty": "hero", "value": 2}})
    items = a.load_native(document, None)
    assert len(items) == 3
    assert native_body(items, a) == document


def test_native_list_of_bodies_is_accepted():
    a = adapter()
    other = fixture()
    other["user"] = {"id": "101"}
    items = a.load_native([fixture(), other], None)
    assert len(items) == 2
    assert only_group_count(items, a) == 2


def test_native_purchase_without_cart_is_refused_naming_the_path():
    document = fixture()
    del document["events"][0]["properties"]["cart"]
    with pytest.raises(ValidationError) as info:
        adapter().load_native(document, None)
    assert info.value.messages == {0: {"events": {0: {"properties": {"cart": ["Missing data for required field."]}}}}}


def test_the_same_event_without_event_type_is_a_custom_event_and_accepted():
    document = fixture()
    properties_ = document["events"][0]["properties"]
    del properties_["cart"]
    del properties_["eventType"]
    assert len(adapter().load_native(document, None)) == 1


def test_native_cart_quantity_must_be_an_integer():
    document = fixture()
    document["events"][0]["properties"]["cart"][0]["quantity"] = 1.5
    with pytest.raises(ValidationError) as info:
        adapter().load_native(document, None)
    assert "quantity" in info.value.messages[0]["events"][0]["properties"]["cart"][0]


def test_native_plaintext_hashed_email_is_hashed_before_storage():
    document = fixture()
    document["events"] = [
        {"name": "Login", "properties": {"eventType": "login-v1", "hashedEmail": " Test+Dev@Example.com"}}
    ]
    (item,) = adapter().load_native(document, None)
    assert item["event"]["properties"]["hashedEmail"] == EMAIL_SHA256
    assert "test+dev" not in json.dumps(item).lower()


def test_native_sha256_hashed_email_is_kept():
    document = fixture()
    document["events"] = [{"name": "Signup", "properties": {"eventType": "signup-v1", "hashedEmail": EMAIL_SHA256}}]
    (item,) = adapter().load_native(document, None)
    assert item["event"]["properties"]["hashedEmail"] == EMAIL_SHA256


def test_native_garbage_hashed_email_is_refused():
    document = fixture()
    document["events"] = [{"name": "Login", "properties": {"eventType": "login-v1", "hashedEmail": "not an address"}}]
    with pytest.raises(ValidationError) as info:
        adapter().load_native(document, None)
    assert "hashedEmail" in json.dumps(info.value.messages)
    assert "not an address" not in json.dumps(info.value.messages)


def test_native_garbage_hashed_email_error_names_the_event_path():
    document = fixture()
    document["events"].append({"name": "Login", "properties": {"eventType": "login-v1", "hashedEmail": "garbage"}})
    with pytest.raises(ValidationError) as info:
        adapter().load_native([fixture(), document], None)
    assert set(info.value.messages) == {1}
    assert set(info.value.messages[1]["events"]) == {1}


@pytest.mark.parametrize("event_type", [["purchase-v1"], {"v": 1}])
def test_native_event_type_that_is_not_a_string_is_a_validation_error(event_type):
    document = fixture()
    document["events"][0]["properties"]["eventType"] = event_type
    with pytest.raises(ValidationError):
        adapter().load_native(document, None)


def test_native_page_operation_takes_a_page_body():
    a = adapter()
    document = fixture()
    del document["events"]
    items = a.load_native(document, "page")
    assert items == [{"page": document}]
    (p,) = a.map_native(items[0], "page")
    assert p.group == "page"
    assert json.loads(a.body_for(p.group, [p.body])) == document


def test_native_page_body_with_events_is_refused():
    with pytest.raises(ValidationError) as info:
        adapter().load_native(fixture(), "page")
    assert "events" in info.value.messages[0]


def test_native_page_body_needs_a_page_in_its_context():
    document = fixture()
    del document["events"]
    del document["context"]["page"]
    with pytest.raises(ValidationError) as info:
        adapter().load_native(document, "page")
    assert info.value.messages == {0: {"context": {"page": ["Missing data for required field."]}}}


def test_native_unknown_operation_is_refused():
    with pytest.raises(ValidationError) as info:
        adapter().load_native(fixture(), "choose")
    assert "operation" in info.value.messages


def test_native_body_missing_user_is_refused():
    document = fixture()
    del document["user"]
    with pytest.raises(ValidationError) as info:
        adapter().load_native(document, None)
    assert info.value.messages == {0: {"user": ["Missing data for required field."]}}
