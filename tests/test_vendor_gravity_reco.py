"""Unit tests of the Gravity RECO (Yusp) adapter (conversion_relay.vendors.gravity_reco)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from conversion_relay.config.settings import settings_from_document
from conversion_relay.errors import ConfigurationError
from conversion_relay.outcomes import Accepted, Rejected, RetryLater, TooLarge
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.schemas.gravity_reco import RecoEventSchema
from conversion_relay.vendors import adapter_classes, adapter_for
from conversion_relay.vendors.base import Skip
from conversion_relay.vendors.destination import DestinationSettings
from conversion_relay.vendors.gravity_reco import GravityRecoAdapter
from tests.support import UNUSED_REDIS, destination_settings

FIXTURES = Path(__file__).parent / "fixtures" / "gravity_reco"
API_KEY = "reco-password-0123"
KEY_ENV = "TEST_RECO_API_KEY"
USERNAME = "mywebshop-user"
BASE_URL = "https://mywebshop-ams.gravityrd-services.com/grrec-mywebshop-war/WebshopServlet"
EVENT_TIME = 1718973400


def destination(**options: Any) -> DestinationSettings:
    table = {"vendor": "gravity_reco", "api_key_env": KEY_ENV, "username": USERNAME, "base_url": BASE_URL, **options}
    return destination_settings("reco", table, **{KEY_ENV: API_KEY})


def adapter(**options: Any) -> GravityRecoAdapter:
    found = adapter_for(destination(**options))
    assert isinstance(found, GravityRecoAdapter)
    return found


def canonical(name: str, custom_data: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A canonical event loaded as the producer loads it."""
    event: dict[str, Any] = {
        "event_name": name,
        "event_time": EVENT_TIME,
        "event_id": "evt-1",
        "user_data": {"external_id": ["user-1", "user-2"], "reco_cookie_id": "cookie-1", "visitor_id": "visitor-1"},
    }
    if custom_data is not None:
        event["custom_data"] = custom_data
    event.update(fields)
    return canonical_schema().load(copy.deepcopy(event))


def bodies(event: dict[str, Any], a: GravityRecoAdapter | None = None) -> list[dict[str, Any]]:
    parts = (a or adapter()).map_event(event)
    assert all(p.group == "addEvents" for p in parts)
    return [json.loads(p.body) for p in parts]


def skip_reason(event: dict[str, Any], a: GravityRecoAdapter | None = None) -> str:
    with pytest.raises(Skip) as skipped:
        (a or adapter()).map_event(event)
    return skipped.value.reason


def name_values(body: dict[str, Any]) -> dict[str, str]:
    pairs = body.get("nameValues", [])
    assert len({pair["name"] for pair in pairs}) == len(pairs)
    return {pair["name"]: pair["value"] for pair in pairs}


def empty_values(value: Any, where: str = "") -> list[str]:
    """Paths of every null or empty value (string, list, object) in a body."""
    if value is None or value == "" or value == [] or value == {}:
        return [where or "."]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in empty_values(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in empty_values(v, f"{where}[{i}]")]
    return []


ITEMS = [
    {"id": "SKU-1", "quantity": 2, "item_price": 10.0},
    {"id": "SKU-2", "quantity": 1, "item_price": 199.9},
]
ORDER = {"currency": "EUR", "order_id": "order-0123", "contents": ITEMS}

#: Canonical events of every type the default mapping sends, with the parts they give.
MAPPED = [
    ("Purchase", ORDER, "BUY", 2),
    ("ViewContent", {"contents": ITEMS}, "VIEW", 2),
    ("AddToCart", {"contents": ITEMS[:1]}, "ADD_TO_CART", 1),
    ("RemoveFromCart", {"contents": ITEMS[:1]}, "REMOVE_FROM_CART", 1),
    ("AddToWishlist", {"contents": ITEMS[1:]}, "ADD_TO_WISHLIST", 1),
    ("Search", {"search_string": "red shoes"}, "PRODUCT_SEARCH", 1),
    ("Login", None, "LOGIN", 1),
]


# --- registry, base URL and settings ------------------------------------------------------------


def test_adapter_is_registered_with_its_defaults():
    assert adapter_classes()["gravity_reco"] is GravityRecoAdapter
    d = destination()
    assert d.max_events == 200
    assert d.parallel_drains == 2
    assert GravityRecoAdapter.splits_rejected_batches is True


def test_max_events_is_capped_at_the_vendors_suggested_200():
    """Seed 004: "we suggest max 100-200 items/users/events in one batch"."""
    assert destination(max_events=100).max_events == 100
    with pytest.raises(ConfigurationError, match="max_events"):
        destination(max_events=201)


def test_base_url_is_built_from_customer_and_location():
    assert GravityRecoAdapter.base_url_for({"customer": "mywebshop", "location": "ams"}) == BASE_URL


@pytest.mark.parametrize("options", [{}, {"customer": "mywebshop"}, {"location": "ams"}])
def test_base_url_needs_customer_and_location(options):
    assert GravityRecoAdapter.base_url_for(options) is None


def test_destination_without_base_url_uses_customer_and_location():
    table = {
        "vendor": "gravity_reco",
        "api_key_env": KEY_ENV,
        "username": "u",
        "customer": "mywebshop",
        "location": "ams",
    }
    settings = settings_from_document({"destinations": {"reco": table}}, {"REDIS_URL": UNUSED_REDIS, KEY_ENV: API_KEY})
    assert settings.destinations["reco"].base_url == BASE_URL


def test_destination_without_any_base_url_is_a_configuration_error():
    table = {"vendor": "gravity_reco", "api_key_env": KEY_ENV, "username": "u"}
    with pytest.raises(ConfigurationError, match="customer and location"):
        settings_from_document({"destinations": {"reco": table}}, {"REDIS_URL": UNUSED_REDIS, KEY_ENV: API_KEY})


def test_destination_needs_a_username():
    table = {"vendor": "gravity_reco", "api_key_env": KEY_ENV, "base_url": BASE_URL}
    with pytest.raises(ConfigurationError, match="username"):
        settings_from_document({"destinations": {"reco": table}}, {"REDIS_URL": UNUSED_REDIS, KEY_ENV: API_KEY})


# --- mapping ------------------------------------------------------------------------------------


def test_purchase_gives_one_buy_event_per_line_item():
    first, second = bodies(canonical("Purchase", ORDER))
    assert first == {
        "eventType": "BUY",
        "time": EVENT_TIME,
        "userId": "user-1",
        "cookieId": "cookie-1",
        "itemId": "SKU-1",
        "nameValues": [
            {"name": "quantity", "value": "2"},
            {"name": "unitPrice", "value": "10"},
            {"name": "orderId", "value": "order-0123"},
            {"name": "currency", "value": "EUR"},
        ],
    }
    assert second["itemId"] == "SKU-2"
    assert name_values(second) == {"quantity": "1", "unitPrice": "199.9", "orderId": "order-0123", "currency": "EUR"}


@pytest.mark.parametrize(
    ("price", "text"), [(10.0, "10"), (199.9, "199.9"), (1234, "1234"), (12345.67, "12345.67"), (0.5, "0.5")]
)
def test_unit_price_is_written_without_trailing_zeros(price, text):
    order = {"currency": "EUR", "contents": [{"id": "a", "item_price": price, "quantity": 1}]}
    (body,) = bodies(canonical("Purchase", order))
    assert name_values(body)["unitPrice"] == text


def test_purchase_without_order_id_uses_the_event_id():
    (body,) = bodies(canonical("Purchase", {"currency": "EUR", "contents": ITEMS[:1]}))
    assert name_values(body)["orderId"] == "evt-1"


def test_price_without_currency_is_left_out_with_its_currency():
    (body,) = bodies(canonical("Purchase", {"order_id": "o-1", "contents": ITEMS[:1]}))
    assert name_values(body) == {"quantity": "2", "orderId": "o-1"}


def test_default_currency_option_prices_orders_without_one():
    (body,) = bodies(canonical("Purchase", {"contents": ITEMS[:1]}), adapter(default_currency="HUF"))
    assert (name_values(body)["unitPrice"], name_values(body)["currency"]) == ("10", "HUF")


def test_missing_quantity_and_price_are_left_out_never_invented():
    (buy,) = bodies(canonical("Purchase", {"currency": "EUR", "order_id": "o-1", "contents": [{"id": "a"}]}))
    assert name_values(buy) == {"orderId": "o-1"}
    (cart,) = bodies(canonical("AddToCart", {"contents": [{"id": "a"}]}))
    assert "nameValues" not in cart


def test_send_currency_false_drops_the_currency():
    for body in bodies(canonical("Purchase", ORDER), adapter(send_currency=False)):
        assert set(name_values(body)) == {"quantity", "unitPrice", "orderId"}


def test_pascal_name_value_case_capitalises_names():
    for body in bodies(canonical("Purchase", ORDER), adapter(name_value_case="pascal")):
        assert [pair["name"] for pair in body["nameValues"]] == ["Quantity", "UnitPrice", "OrderId", "Currency"]
    (search,) = bodies(canonical("Search", {"search_string": "x"}), adapter(name_value_case="pascal"))
    assert search["nameValues"] == [{"name": "SearchString", "value": "x"}]


def test_user_id_is_the_first_external_id_and_cookie_id_recos_own_cookie():
    (body,) = bodies(canonical("AddToCart", {"contents": ITEMS[:1]}))
    assert body["userId"] == "user-1"
    assert body["cookieId"] == "cookie-1"


def test_cookie_id_alone_attributes_an_event():
    (body,) = bodies(canonical("AddToCart", {"contents": ITEMS[:1]}, user_data={"reco_cookie_id": "c-9"}))
    assert body["cookieId"] == "c-9"
    assert "userId" not in body


def test_cookie_id_is_never_another_vendors_id():
    ids = {"external_id": ["u-1"], "visitor_id": "gravity-visitor", "browser_id": "b-1"}
    (body,) = bodies(canonical("AddToCart", {"contents": ITEMS[:1]}, user_data=ids))
    assert "cookieId" not in body


@pytest.mark.parametrize("name", ["Purchase", "AddToCart", "ViewContent", "Search"])
def test_events_without_user_id_or_reco_cookie_are_skipped(name):
    others = {"visitor_id": "gravity-visitor", "browser_id": "b-1", "session_id": "s-1"}
    assert skip_reason(canonical(name, ORDER, user_data=others)) == "no_user_id"


def test_view_content_gives_one_view_per_item():
    views = bodies(canonical("ViewContent", {"contents": [{"id": "A"}, {"id": "B"}]}))
    assert [(v["eventType"], v["itemId"]) for v in views] == [("VIEW", "A"), ("VIEW", "B")]
    assert all("nameValues" not in v for v in views)


def test_add_to_cart_carries_the_quantity():
    (body,) = bodies(canonical("AddToCart", {"contents": [{"id": "A", "quantity": 3, "item_price": 2.0}]}))
    assert body["eventType"] == "ADD_TO_CART"
    assert body["itemId"] == "A"
    assert body["nameValues"] == [{"name": "quantity", "value": "3"}]


def test_search_gives_product_search_with_the_search_string():
    (body,) = bodies(canonical("Search", {"search_string": "red shoes"}))
    assert body == {
        "eventType": "PRODUCT_SEARCH",
        "time": EVENT_TIME,
        "userId": "user-1",
        "cookieId": "cookie-1",
        "nameValues": [{"name": "searchString", "value": "red shoes"}],
    }


def test_login_with_user_and_cookie_id():
    (body,) = bodies(canonical("Login"))
    assert body == {"eventType": "LOGIN", "time": EVENT_TIME, "userId": "user-1", "cookieId": "cookie-1"}


@pytest.mark.parametrize(
    ("user_data", "reason"),
    [
        ({"external_id": ["u"], "visitor_id": "v"}, "no_cookie_id"),
        ({"reco_cookie_id": "c"}, "no_user_id"),
        ({}, "no_user_id"),
    ],
    ids=["no-cookie", "no-user", "neither"],
)
def test_login_without_user_id_and_cookie_id_is_skipped(user_data, reason):
    assert skip_reason(canonical("Login", user_data=user_data)) == reason


@pytest.mark.parametrize("name", ["Purchase", "ViewContent", "AddToCart", "RemoveFromCart", "AddToWishlist"])
def test_item_events_without_line_items_are_skipped(name):
    assert skip_reason(canonical(name, {"value": 5.0, "currency": "EUR"})) == "no_line_items"


@pytest.mark.parametrize("name", ["Lead", "PageView", "InitiateCheckout", "DownloadWhitepaper"])
def test_names_without_a_reco_type_are_skipped(name):
    assert skip_reason(canonical(name, {"contents": ITEMS})) == "unmapped_event"


def test_event_types_option_maps_more_names():
    a = adapter(event_types={"Lead": "LEAD"})
    (body,) = bodies(canonical("Lead", {"value": 3.0}), a)
    assert body == {"eventType": "LEAD", "time": EVENT_TIME, "userId": "user-1", "cookieId": "cookie-1"}
    RecoEventSchema().load(body)


def test_event_types_option_keeps_the_default_mapping():
    a = adapter(event_types={"Lead": "LEAD"})
    assert len(a.map_event(canonical("Purchase", ORDER))) == 2


@pytest.mark.parametrize(("name", "custom_data", "event_type", "count"), MAPPED, ids=[m[0] for m in MAPPED])
def test_mapped_events_have_their_type_and_count(name, custom_data, event_type, count):
    found = bodies(canonical(name, custom_data))
    assert [b["eventType"] for b in found] == [event_type] * count


@pytest.mark.parametrize(("name", "custom_data", "event_type", "count"), MAPPED, ids=[m[0] for m in MAPPED])
@pytest.mark.parametrize("case", ["camel", "pascal"])
def test_mapped_events_carry_no_null_or_empty_value(name, custom_data, event_type, count, case):
    sparse = canonical(
        name,
        {**(custom_data or {}), "search_string": ""} if name == "Search" else custom_data,
        user_data={"external_id": ["u"], "reco_cookie_id": "c" if name == "Login" else "", "session_id": ""},
    )
    a = adapter(name_value_case=case)
    for body in bodies(canonical(name, custom_data), a) + bodies(sparse, a):
        assert empty_values(body) == []
        assert b"null" not in json.dumps(body).encode()


@pytest.mark.parametrize(("name", "custom_data", "event_type", "count"), MAPPED, ids=[m[0] for m in MAPPED])
def test_mapped_events_validate_against_the_reco_event_schema(name, custom_data, event_type, count):
    a = adapter()
    parts = a.map_event(canonical(name, custom_data))
    for p in parts:
        RecoEventSchema().load(json.loads(p.body))
    document = json.loads(a.body_for("addEvents", [p.body for p in parts]))
    assert document == [json.loads(p.body) for p in parts]


def test_custom_item_event_types_are_sent_per_item_with_item_id():
    a = adapter(event_types={"RemoveFromWishlist": "REMOVE_FROM_WISHLIST"})
    found = bodies(canonical("RemoveFromWishlist", {"contents": ITEMS}), a)
    assert [b.get("itemId") for b in found] == ["SKU-1", "SKU-2"]
    for body in found:
        RecoEventSchema().load(body)


# --- requests and responses ---------------------------------------------------------------------


def test_request_posts_to_the_operation_with_basic_auth_and_async():
    a = adapter()
    body = a.body_for("addEvents", [b'{"eventType":"VIEW","itemId":"a"}'])
    assert body == b'[{"eventType":"VIEW","itemId":"a"}]'
    request = a.request_for("addEvents", body)
    assert request.method == "POST"
    assert request.url == f"{BASE_URL}/addEvents"
    assert request.params == {"async": "true"}
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    credentials = base64.b64encode(f"{USERNAME}:{API_KEY}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {credentials}"
    assert API_KEY not in request.url
    assert request.body == body


def test_async_false_option_is_sent_as_false():
    assert adapter(**{"async": False}).request_for("addEvents", b"[]").params == {"async": "false"}


def test_other_operations_go_to_their_own_path():
    assert adapter().request_for("addItems", b"[]").url == f"{BASE_URL}/addItems"


def test_interpret_empty_200_is_all_ok():
    assert adapter().interpret(200, {}, b"", [b"{}", b"{}"]) == Accepted(statuses=["ok", "ok"])


def test_interpret_400_is_rejected_with_the_fault_message():
    body = b'{"message":"unknown user","faultInfo":"x"}'
    outcome = adapter().interpret(400, {}, body, [b"{}"])
    assert outcome == Rejected(reason="http_400", status=400, excerpt=body.decode())


def test_interpret_413_is_too_large():
    assert adapter().interpret(413, {}, b"Request Entity Too Large", [b"{}"]) == TooLarge(
        status=413, excerpt="Request Entity Too Large"
    )


def test_interpret_500_retries_later():
    assert isinstance(adapter().interpret(500, {}, b"", [b"{}"]), RetryLater)


# --- vendor-native payloads ---------------------------------------------------------------------


def fixture() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "add_events.json").read_text())


def rebuilt(items: list[dict[str, Any]], a: GravityRecoAdapter, operation: str) -> tuple[str, Any]:
    parts = [p for item in items for p in a.map_native(item, operation)]
    (group,) = {p.group for p in parts}
    return group, json.loads(a.body_for(group, [p.body for p in parts]))


def test_native_add_events_fixture_rebuilds_the_same_body():
    a = adapter()
    items = a.load_native(fixture(), "addEvents")
    assert len(items) == 1
    assert rebuilt(items, a, "addEvents") == ("addEvents", fixture())


def test_native_single_event_is_one_item():
    assert adapter().load_native(fixture()[0], "addEvents") == fixture()


def test_native_add_items_and_add_users():
    a = adapter()
    items = [
        {"itemId": "SKU-1", "title": "Shirt", "hidden": False, "fromDate": 1, "nameValues": [
            {"name": "CategoryPath", "value": "Men/Shirts"}, {"name": "CategoryPath", "value": "Sale"}]},
        {"itemId": "SKU-2"},
    ]  # fmt: skip
    assert rebuilt(a.load_native(items, "addItems"), a, "addItems") == ("addItems", items)
    users = [{"userId": "user-1", "nameValues": [{"name": "City", "value": "Berlin"}]}]
    assert rebuilt(a.load_native(users, "addUsers"), a, "addUsers") == ("addUsers", users)


def test_native_hide_items_becomes_add_items_with_hidden_true():
    a = adapter()
    items = a.load_native([{"itemId": "SKU-1"}, {"itemId": "SKU-2"}], "hideItems")
    assert rebuilt(items, a, "hideItems") == (
        "addItems",
        [{"itemId": "SKU-1", "hidden": True}, {"itemId": "SKU-2", "hidden": True}],
    )


@pytest.mark.parametrize("operation", [None, "deleteItems", "addevents", "getItemRecommendation"])
def test_native_unknown_operation_is_refused(operation):
    with pytest.raises(ValidationError) as info:
        adapter().load_native(fixture(), operation)
    assert "operation" in info.value.messages


def native_errors(payload: Any, operation: str = "addEvents") -> Any:
    with pytest.raises(ValidationError) as info:
        adapter().load_native(payload, operation)
    return info.value.messages


@pytest.mark.parametrize(("value", "message"), [(None, "Field may not be null."), ("", "Empty")])
def test_native_name_value_that_is_null_or_empty_is_refused(value, message):
    event = fixture()[0]
    event["nameValues"][0]["value"] = value
    errors = native_errors([event])
    assert message in errors[0]["nameValues"][0]["value"][0]


def test_native_name_value_with_empty_name_is_refused():
    event = fixture()[0]
    event["nameValues"].append({"name": "", "value": "x"})
    assert "name" in native_errors([event])[0]["nameValues"][3]


@pytest.mark.parametrize("name", ["email", "name", "Phone_Number", "E-Mail", "firstName", "md5_email"])
def test_native_personal_name_value_in_plaintext_is_refused(name):
    users = [{"userId": "u", "nameValues": [{"name": name, "value": "Jane Doe <jane@example.com>"}]}]
    errors = native_errors(users, "addUsers")
    (message,) = errors[0]["nameValues"][0]["value"]
    assert "personal data" in message
    assert "jane" not in message.lower()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("email", hashlib.sha256(b"jane@example.com").hexdigest()),
        ("name", hashlib.sha256(b"jane doe").hexdigest()),
        ("Phone_Number", hashlib.sha256(b"+4915112345678").hexdigest()),
        ("md5_email", hashlib.md5(b"jane@example.com").hexdigest()),
    ],
)
def test_native_personal_name_value_as_hex_digest_is_accepted(name, value):
    users = [{"userId": "u", "nameValues": [{"name": name, "value": value}]}]
    assert adapter().load_native(users, "addUsers") == users


def test_native_other_name_values_may_be_plaintext():
    users = [{"userId": "u", "nameValues": [{"name": "City", "value": "Jane's town"}]}]
    assert adapter().load_native(users, "addUsers") == users


def test_native_view_without_item_id_is_refused():
    assert native_errors([{"eventType": "VIEW", "cookieId": "c"}]) == {0: {"itemId": ["Required for VIEW events."]}}


def test_native_login_needs_user_and_cookie_id():
    errors = native_errors([{"eventType": "LOGIN", "userId": "u"}])
    assert errors == {0: {"userId": ["LOGIN needs both userId and cookieId."]}}


def test_native_unknown_field_and_wrong_time_are_refused():
    event = fixture()[0]
    event["time"] = "1525625386"
    event["price"] = 1
    assert set(native_errors([event])[0]) == {"time", "price"}


def test_native_item_needs_an_item_id():
    assert native_errors([{"title": "x"}], "addItems") == {0: {"itemId": ["Missing data for required field."]}}
