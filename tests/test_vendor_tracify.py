"""Unit tests of the Tracify adapter (conversion_relay.vendors.tracify)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from conversion_relay.cli.jsonfile import PayloadParseError, parse_json
from conversion_relay.config.settings import settings_from_document
from conversion_relay.errors import ConfigurationError
from conversion_relay.outcomes import Accepted, Rejected, RetryLater
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.schemas.tracify import TracifyEventSchema
from conversion_relay.vendors import adapter_classes, adapter_for
from conversion_relay.vendors.base import Part, Skip
from conversion_relay.vendors.destination import DestinationSettings
from conversion_relay.vendors.tracify import TracifyAdapter, anonymise
from tests.support import UNUSED_REDIS, destination_settings

FIXTURES = Path(__file__).parent / "fixtures" / "tracify"
VALID_FIXTURES = ("pageview", "productview", "addtocart", "purchase")
API_KEY = "tracify-token-0123456789"
KEY_ENV = "TEST_TRACIFY_API_KEY"
CSID = "3f2b8c1e-9d4a-4e7b-8a6c-1b2d3e4f5a6b"
EVENT_TIME = 1718973400  # 2024-06-21 12:36:40 UTC
URL = "https://www.example.com/checkout/thank-you"

IP = "192.168.1.1"
AGENT = "Mozilla/5.0"
EMAIL = "test+dev@example.com"
#: Test vectors of Tracify's routine (vendor-contracts.md 1.4).
IP_KEY = "2d0b84ff7b04b74906148264f4c6cba08b99a4c9a856ad92fb9ba0dde4932580"
AGENT_KEY = "fe3fa8b7cb726fc1507885122d8bc5dcb7bfbf0f17f08d8f4dd588bc810c929b"
SESSION_KEY = "6fa4c6102d82c29727f536f606dfa1780df4b188846ff70042cdafbcee84a404"
EMAIL_KEY = "9f7185e0665d28c86f2426af5c2a5c45bc3faba9cdee34ea3ddd5dd3cfa0f0fd"


def destination(**options: Any) -> DestinationSettings:
    table = {"vendor": "tracify", "api_key_env": KEY_ENV, "customer_site_id": CSID, **options}
    return destination_settings("tracify", table, **{KEY_ENV: API_KEY})


def adapter(**options: Any) -> TracifyAdapter:
    found = adapter_for(destination(**options))
    assert isinstance(found, TracifyAdapter)
    return found


def canonical(name: str, custom_data: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A canonical event loaded as the producer loads it."""
    event: dict[str, Any] = {
        "event_name": name,
        "event_time": EVENT_TIME,
        "event_id": "evt-1",
        "event_source_url": URL,
        "user_data": {"client_ip_address": IP, "client_user_agent": AGENT, "em": [EMAIL]},
    }
    if custom_data is not None:
        event["custom_data"] = custom_data
    event.update(fields)
    return canonical_schema().load(copy.deepcopy(event))


def mapped(event: dict[str, Any], a: TracifyAdapter | None = None) -> dict[str, Any]:
    parts = (a or adapter()).map_event(event)
    assert len(parts) == 1
    assert parts[0].group == ""
    return json.loads(parts[0].body)


def data_of(event: dict[str, Any], a: TracifyAdapter | None = None) -> dict[str, Any]:
    return mapped(event, a)["data"]


ITEMS = [
    {"id": "SKU-1", "title": "Name of Product 1", "quantity": 2, "item_price": 25.0},
    {"id": "SKU-2", "quantity": 1, "item_price": 50.0},
]
PURCHASE = {"value": 100.0, "currency": "EUR", "order_id": "123456789", "contents": ITEMS}

#: Canonical events of every type the adapter sends.
MAPPED = [
    ("PageView", None, "pageview"),
    ("ViewContent", {"contents": ITEMS[:1]}, "productview"),
    ("AddToCart", {"contents": ITEMS[:1]}, "addtocart"),
    ("Purchase", PURCHASE, "purchase"),
    ("Lead", {"value": 10.0, "currency": "USD"}, "conversion"),
    ("CompleteRegistration", {"value": 0.0, "currency": "EUR"}, "conversion"),
    ("Subscribe", {"order_id": "sub-1", "value": 9.0, "currency": "EUR"}, "conversion"),
]


def skip_reason(event: dict[str, Any], a: TracifyAdapter | None = None) -> str:
    with pytest.raises(Skip) as skipped:
        (a or adapter()).map_event(event)
    return skipped.value.reason


# --- registry and settings --------------------------------------------------------------------


def test_adapter_is_registered_and_rejects_split_batches():
    assert adapter_classes()["tracify"] is TracifyAdapter
    assert TracifyAdapter.splits_rejected_batches is True


def test_destination_needs_a_customer_site_id():
    with pytest.raises(ConfigurationError, match="customer_site_id"):
        settings_from_document(
            {"destinations": {"tracify": {"vendor": "tracify", "api_key_env": KEY_ENV}}},
            {"REDIS_URL": UNUSED_REDIS, KEY_ENV: API_KEY},
        )


def test_destination_defaults():
    d = destination()
    assert d.base_url == "https://api.tracify.ai"
    assert d.max_events == 100


# --- anonymisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [(IP, IP_KEY), (AGENT, AGENT_KEY), (f"{IP}|{AGENT}", SESSION_KEY), (EMAIL, EMAIL_KEY)],
)
def test_anonymise_matches_the_documented_test_vectors(raw, key):
    assert anonymise(raw) == key


def test_anonymise_is_sha256_of_sha256_hex_without_its_last_five_characters():
    first = hashlib.sha256(b"abc").hexdigest()
    assert anonymise("abc") == hashlib.sha256(first[:-5].encode()).hexdigest()


def test_identity_data_has_the_four_kinds_with_the_documented_keys():
    event = canonical("PageView")
    assert event["user_data"]["em"] == [hashlib.sha256(EMAIL.encode()).hexdigest()]  # no plaintext stored
    assert mapped(event)["identity_data"] == {IP_KEY: 3, AGENT_KEY: 4, SESSION_KEY: 2, EMAIL_KEY: 1}


def test_email_identity_is_computed_from_the_stored_hash_alone():
    stored = canonical("PageView", user_data={"client_ip_address": IP, "client_user_agent": AGENT})
    stored["user_data"]["em"] = [hashlib.sha256(EMAIL.encode()).hexdigest()]
    assert mapped(stored)["identity_data"][EMAIL_KEY] == 1


def test_email_is_normalised_before_the_identity_is_computed():
    event = canonical(
        "PageView", user_data={"client_ip_address": IP, "client_user_agent": AGENT, "em": " TEST+dev@Example.COM"}
    )
    assert EMAIL_KEY in mapped(event)["identity_data"]


def test_session_identity_option_false_drops_kind_two():
    identity = mapped(canonical("PageView"), adapter(session_identity=False))["identity_data"]
    assert identity == {IP_KEY: 3, AGENT_KEY: 4, EMAIL_KEY: 1}


def test_identity_without_email_has_kinds_two_to_four():
    event = canonical("PageView", user_data={"client_ip_address": IP, "client_user_agent": AGENT})
    assert sorted(mapped(event)["identity_data"].values()) == [2, 3, 4]


def test_ipv6_identity_uses_the_canonical_form_of_the_address():
    event = canonical("PageView", user_data={"client_ip_address": "2001:DB8::0001", "client_user_agent": AGENT})
    assert anonymise("2001:db8::1") in mapped(event)["identity_data"]


# --- event types --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "custom_data", "kind"), MAPPED, ids=[m[0] for m in MAPPED])
def test_event_names_map_to_tracify_types(name, custom_data, kind):
    body = mapped(canonical(name, custom_data))
    assert body["type"] == kind
    assert body["customer_site_id"] == CSID
    assert body["url"] == URL


@pytest.mark.parametrize(("name", "custom_data", "kind"), MAPPED, ids=[m[0] for m in MAPPED])
def test_every_mapped_event_validates_against_the_tracify_schema(name, custom_data, kind):
    a = adapter()
    parts = a.map_event(canonical(name, custom_data, page={"referrer": "https://ref.example/"}))
    loaded = TracifyEventSchema().load(json.loads(parts[0].body))
    assert loaded["type"] == kind
    document = json.loads(a.body_for("", [p.body for p in parts]))
    assert document == {"events": [json.loads(parts[0].body)]}


@pytest.mark.parametrize(
    ("name", "custom_data"),
    [("Login", None), ("Search", {"search_string": "shoes"}), ("AddToWishlist", {"contents": ITEMS}), ("Foo", None)],
)
def test_events_tracify_has_no_type_for_are_skipped(name, custom_data):
    assert skip_reason(canonical(name, custom_data)) == "unmapped_event"


def test_conversion_events_option_replaces_the_default_list():
    a = adapter(conversion_events=["Contact"])
    money = {"value": 1.0, "currency": "EUR"}
    assert skip_reason(canonical("Lead", money), a) == "unmapped_event"
    assert mapped(canonical("Contact", money), a)["type"] == "conversion"


@pytest.mark.parametrize(
    "user_data",
    [
        {"client_user_agent": AGENT, "em": [EMAIL]},
        {"client_ip_address": IP, "em": [EMAIL]},
        {"em": [EMAIL], "external_id": ["42"]},
    ],
    ids=["no-ip", "no-user-agent", "neither"],
)
def test_events_without_ip_or_user_agent_are_skipped(user_data):
    reason = "no_user_agent" if "client_ip_address" in user_data else "no_client_ip"
    assert skip_reason(canonical("Purchase", PURCHASE, user_data=user_data)) == reason


def test_events_without_any_url_are_skipped():
    assert skip_reason(canonical("PageView", event_source_url=None)) == "no_absolute_url"


# --- fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"), [(EVENT_TIME, "2024-06-21 12:36:40"), (1_000_000_000, "2001-09-09 01:46:40")]
)
def test_datetime_is_utc_without_t_or_zone(seconds, text):
    assert mapped(canonical("PageView", event_time=seconds))["datetime"] == text


def test_url_and_origin_come_from_the_page_location_first():
    event = canonical("PageView", page={"location": "https://m.example.org:8443/p/1?a=b"})
    body = mapped(event)
    assert body["url"] == "https://m.example.org:8443/p/1?a=b"
    assert body["data"]["origin"] == "https://m.example.org:8443"


def test_origin_format_host_sends_the_bare_host():
    event = canonical("PageView", event_source_url="https://shop.example:8443/x")
    assert data_of(event, adapter(origin_format="host"))["origin"] == "shop.example:8443"
    assert data_of(event)["origin"] == "https://shop.example:8443"


TRACKING_URL = "https://www.example.com/p?utm_source=fb&utm_medium=paid&trc_mcmp_id=111&trc_mad_id=333&gclid=abc&page=2"


def test_every_url_parameter_is_its_own_key_of_data():
    """Seed 002: "Pass each URL parameter as it's own key-value pair"; click ids included."""
    data = data_of(canonical("PageView", event_source_url=TRACKING_URL + "&fbclid=fb.1"))
    assert data == {
        "origin": "https://www.example.com",
        "utm_source": "fb",
        "utm_medium": "paid",
        "trc_mcmp_id": "111",
        "trc_mad_id": "333",
        "gclid": "abc",
        "page": "2",
        "fbclid": "fb.1",
    }


PERSONAL_URL = "https://www.example.com/p?utm_source=nl&E-Mail=x&first_name=Ann&Tel=123&zip=10115&postcode=1&gclid=g"


def test_url_parameters_naming_personal_data_are_dropped_by_default():
    data = data_of(canonical("PageView", event_source_url=PERSONAL_URL))
    assert data == {"origin": "https://www.example.com", "utm_source": "nl", "gclid": "g"}


def test_drop_url_parameters_option_replaces_the_default_list():
    data = data_of(canonical("PageView", event_source_url=PERSONAL_URL), adapter(drop_url_parameters=["gclid", "tel"]))
    assert "gclid" not in data and "Tel" not in data
    assert (data["E-Mail"], data["first_name"], data["zip"]) == ("x", "Ann", "10115")
    everything = data_of(canonical("PageView", event_source_url=PERSONAL_URL), adapter(drop_url_parameters=[]))
    assert everything["Tel"] == "123"


def test_url_parameter_named_origin_does_not_replace_the_origin():
    event = canonical("PageView", event_source_url="https://www.example.com/p?origin=newsletter&utm_source=nl")
    data = data_of(event)
    assert data["origin"] == "https://www.example.com"


def test_referer_comes_from_the_page_referrer():
    data = data_of(canonical("PageView", page={"referrer": "https://www.referringwebsite.com"}))
    assert data["Referer"] == "https://www.referringwebsite.com"
    assert "Referer" not in data_of(canonical("PageView"))


def test_a_route_as_page_location_still_gives_an_absolute_url_and_origin():
    event = canonical("PageView", page={"location": "/checkout/thank-you"})
    body = mapped(event)
    assert body["url"] == URL
    assert body["data"]["origin"] == "https://www.example.com"


def test_a_screen_name_without_any_url_is_not_sent_as_an_invalid_event():
    event = canonical("PageView", event_source_url=None, page={"location": "home"})
    assert skip_reason(event) == "no_absolute_url"


# --- purchases and conversions ------------------------------------------------------------------


def test_purchase_data_has_order_currency_amount_and_line_items():
    assert data_of(canonical("Purchase", PURCHASE)) == {
        "origin": "https://www.example.com",
        "order_id": "123456789",
        "currency": "EUR",
        "amount": "100.00",
        "ITEM1": "Name of Product 1",
        "AMT1": "25.00",
        "QTY1": "2",
        "ITEM2": "SKU-2",
        "AMT2": "50.00",
        "QTY2": "1",
    }


def test_purchase_amt_is_the_unit_price_and_amount_defaults_to_the_sum_of_lines():
    contents = [{"id": "a", "item_price": 4.5, "quantity": 3}, {"id": "b", "item_price": 1.0, "quantity": 1}]
    data = data_of(canonical("Purchase", {"currency": "EUR", "contents": contents}))
    assert data["amount"] == "14.50"
    assert (data["AMT1"], data["QTY1"]) == ("4.50", "3")
    assert data["AMT2"] == "1.00"


def test_purchase_line_without_price_or_quantity_has_no_amt_or_qty():
    contents = [{"id": "a", "item_price": 4.5, "quantity": 2}, {"id": "b"}]
    data = data_of(canonical("Purchase", {"value": 9.0, "currency": "EUR", "contents": contents}))
    assert (data["AMT1"], data["QTY1"]) == ("4.50", "2")
    assert data["ITEM2"] == "b"
    assert "AMT2" not in data and "QTY2" not in data


def test_purchase_without_order_id_uses_the_event_id():
    assert data_of(canonical("Purchase", {"value": 1.0, "currency": "EUR"}))["order_id"] == "evt-1"


def test_purchase_without_any_value_is_skipped():
    assert skip_reason(canonical("Purchase", {"currency": "EUR", "contents": [{"id": "a"}]})) == "no_value"


def test_purchase_value_is_not_summed_from_a_line_without_quantity():
    priced = {"id": "a", "item_price": 4.5, "quantity": 2}
    no_quantity = {"id": "b", "item_price": 3.0}  # one is not assumed
    assert skip_reason(canonical("Purchase", {"currency": "EUR", "contents": [priced, no_quantity]})) == "no_value"


def test_purchase_without_currency_is_skipped_unless_the_destination_sets_one():
    event = canonical("Purchase", {"value": 5.0, "order_id": "o-1"})
    assert skip_reason(event) == "no_currency"
    assert data_of(event, adapter(default_currency="CHF"))["currency"] == "CHF"


def test_decimal_separator_option_writes_commas():
    data = data_of(canonical("Purchase", {**PURCHASE, "value": 1234.5}), adapter(decimal_separator=","))
    assert data["amount"] == "1234,50"
    assert data["AMT1"] == "25,00"


def test_conversion_sends_amount_conversion_id_and_currency_by_default():
    data = data_of(canonical("Lead", {"value": 19.9, "currency": "usd", "order_id": "lead-7"}))
    assert data == {
        "origin": "https://www.example.com",
        "conversion_id": "lead-7",
        "currency": "USD",
        "amount": "19.90",
    }


def test_conversion_money_field_value_option():
    data = data_of(canonical("Lead", {"value": 5.0, "currency": "EUR"}), adapter(conversion_money_field="value"))
    assert data["value"] == "5.00"
    assert "amount" not in data


def test_conversion_without_value_is_skipped_never_sent_as_zero():
    assert skip_reason(canonical("Lead")) == "no_value"
    assert skip_reason(canonical("Lead", {"currency": "EUR"}), adapter(default_currency="CHF")) == "no_value"


def test_conversion_without_currency_is_skipped_unless_the_destination_sets_one():
    assert skip_reason(canonical("Lead", {"value": 3.0})) == "no_currency"
    data = data_of(canonical("Lead", {"value": 3.0}), adapter(default_currency="CHF"))
    assert (data["amount"], data["currency"], data["conversion_id"]) == ("3.00", "CHF", "evt-1")


# --- requests and responses ---------------------------------------------------------------------


def test_request_posts_to_api_v1_events_with_the_token_header():
    a = adapter()
    body = a.body_for("", [b'{"a":1}', b'{"b":2}'])
    assert json.loads(body) == {"events": [{"a": 1}, {"b": 2}]}
    request = a.request_for("", body)
    assert request.method == "POST"
    assert request.url == "https://api.tracify.ai/api/v1/events"
    assert request.headers == {"tracify-token": API_KEY, "Content-Type": "application/json"}
    assert request.body == body
    assert API_KEY not in request.url
    assert not request.params


def test_request_url_keeps_the_base_path():
    request = adapter(base_url="http://127.0.0.1:8765/tracify").request_for("", b"{}")
    assert request.url == "http://127.0.0.1:8765/tracify/api/v1/events"


@pytest.mark.parametrize("body", [b'{"status": true}', b"", b"<html>ok</html>"])
def test_interpret_200_without_a_false_status_is_all_ok(body):
    assert adapter().interpret(200, {}, body, [b"{}", b"{}"]) == Accepted(statuses=["ok", "ok"])


def test_interpret_200_with_status_false_is_rejected():
    body = b'{"status": false, "error": "invalid customer_site_id"}'
    outcome = adapter().interpret(200, {}, body, [b"{}"])
    assert outcome == Rejected(reason="vendor_refused", status=200, excerpt=body.decode())


@pytest.mark.parametrize("status", [400, 401, 422])
def test_interpret_client_errors_are_rejected(status):
    outcome = adapter().interpret(status, {}, b'{"status": false}', [b"{}", b"{}"])
    assert isinstance(outcome, Rejected)
    assert outcome.status == status


def test_interpret_503_retries_later():
    assert isinstance(adapter().interpret(503, {}, b"", [b"{}"]), RetryLater)


# --- vendor-native payloads ---------------------------------------------------------------------


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def rebuilt(items: list[dict[str, Any]], a: TracifyAdapter) -> Any:
    parts: list[Part] = [p for item in items for p in a.map_native(item, None)]
    return json.loads(a.body_for("", [p.body for p in parts]))


@pytest.mark.parametrize("name", VALID_FIXTURES)
def test_native_fixtures_load_and_rebuild_the_same_body(name):
    a = adapter()
    items = a.load_native(fixture(name), None)
    assert len(items) == 1
    assert rebuilt(items, a) == fixture(name)


def test_native_single_event_and_list_of_events_are_accepted():
    a = adapter()
    event = fixture("purchase")["events"][0]
    assert a.load_native(event, None) == [event]
    assert len(a.load_native([event, fixture("pageview")["events"][0]], None)) == 2


def test_conversion_fixture_is_invalid_json_with_a_trailing_comma():
    text = (FIXTURES / "conversion.json").read_text()
    with pytest.raises(PayloadParseError) as info:
        parse_json(text, "conversion.json")
    message = str(info.value)
    assert "trailing comma" in message
    assert "line 19" in message


def test_conversion_fixture_without_the_trailing_comma_loads():
    text = (FIXTURES / "conversion.json").read_text().replace('"100.00",\n}', '"100.00"\n}')
    a = adapter()
    document = parse_json(text)
    assert rebuilt(a.load_native(document, None), a) == document


def native_errors(event: dict[str, Any]) -> Any:
    with pytest.raises(ValidationError) as info:
        adapter().load_native({"events": [event]}, None)
    return info.value.messages["events"][0]


@pytest.mark.parametrize("key", ["not-a-hash", "A" * 64, IP_KEY[:-1]])
def test_native_identity_key_that_is_not_lower_case_hex_is_refused(key):
    event = fixture("pageview")["events"][0]
    event["identity_data"][key] = 1
    assert "identity_data" in native_errors(event)


def test_native_identity_without_ip_and_user_agent_kinds_is_refused():
    event = fixture("pageview")["events"][0]
    event["identity_data"] = {IP_KEY: 3}
    assert "identity_data" in native_errors(event)


@pytest.mark.parametrize("text", ["2024-06-21T12:36:40", "2024-06-21 12:36:40+00:00", "21.06.2024 12:36"])
def test_native_wrong_datetime_is_refused(text):
    event = fixture("pageview")["events"][0]
    event["datetime"] = text
    assert set(native_errors(event)) == {"datetime"}


def test_native_purchase_without_order_id_is_refused_naming_the_field():
    event = fixture("purchase")["events"][0]
    del event["data"]["order_id"]
    assert native_errors(event) == {"data": {"order_id": ["Missing data for required field."]}}


def test_native_conversion_needs_an_amount_or_value():
    event = parse_json((FIXTURES / "conversion.json").read_text().replace('"100.00",\n}', '"100.00"\n}'))
    event = event["events"][0]
    del event["data"]["amount"]
    assert native_errors(event) == {"data": {"amount": ["Missing data for required field."]}}
    event["data"]["value"] = "100.00"
    assert len(adapter().load_native(event, None)) == 1


def test_native_unknown_type_and_customer_site_id_are_refused():
    event = fixture("pageview")["events"][0]
    event["type"] = "postpurchasesurvey"
    event["customer_site_id"] = "site-1"
    assert set(native_errors(event)) == {"type", "customer_site_id"}


def test_native_operation_is_refused():
    with pytest.raises(ValidationError) as info:
        adapter().load_native(fixture("pageview"), "events")
    assert "operation" in info.value.messages
