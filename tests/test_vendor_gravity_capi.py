"""Unit tests of the Gravity Conversions API adapter (conversion_relay.vendors.gravity_capi)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from conversion_relay.outcomes import Accepted, Rejected, RetryLater, TooLarge
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.vendors import adapter_classes, adapter_for
from conversion_relay.vendors.base import Part
from conversion_relay.vendors.destination import DestinationSettings
from conversion_relay.vendors.gravity_capi import EVENT_FIELDS, GravityCapiAdapter

FIXTURES = Path(__file__).parent / "fixtures"
API_KEY = "grv-secret-0123456789"
BASE_URL = "https://api.trygravity.example"
PIXEL_FIELDS = ("grclid", "grcpid", "grpuid", "gradid", "grsig", "graid")


def destination(**overrides: Any) -> DestinationSettings:
    values: dict[str, Any] = dict(
        name="gravity",
        vendor="gravity_capi",
        base_url=BASE_URL,
        api_key=API_KEY,
        api_key_env="GRAVITY_API_KEY",
        connect_timeout_seconds=1.0,
        read_timeout_seconds=2.0,
        max_events=1000,
        max_bytes=1_000_000,
    )
    values.update(overrides)
    return DestinationSettings(**values)


def adapter(**overrides: Any) -> GravityCapiAdapter:
    return GravityCapiAdapter(destination(**overrides))


def seed() -> dict[str, Any]:
    return json.loads((FIXTURES / "gravity_capi_seed_example.json").read_text())


def loaded(data: dict[str, Any] | None = None) -> dict[str, Any]:
    return canonical_schema().load(copy.deepcopy(data if data is not None else seed()))


def body_of(p: Part) -> dict[str, Any]:
    return json.loads(p.body)


def contains_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(contains_null(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_null(v) for v in value)
    return False


def parts_with_ids(*ids: str) -> list[bytes]:
    return [json.dumps({"event_name": "Purchase", "event_id": i}).encode() for i in ids]


def ok_body(*results: dict[str, Any]) -> bytes:
    return json.dumps({"events_received": len(results), "results": list(results)}).encode()


# --- registry ---------------------------------------------------------------------------------


def test_adapter_is_registered_under_its_vendor_name():
    assert adapter_classes()["gravity_capi"] is GravityCapiAdapter
    assert isinstance(adapter_for(destination()), GravityCapiAdapter)


# --- map_event --------------------------------------------------------------------------------


def test_map_event_of_documentation_example_gives_one_part_with_the_capi_event():
    event = loaded()
    parts = adapter().map_event(event)

    assert len(parts) == 1
    assert isinstance(parts[0], Part)
    assert parts[0].group == ""
    body = body_of(parts[0])
    assert set(body) == set(EVENT_FIELDS)
    assert body == event  # the canonical event is this vendor's shape
    assert body["user_data"]["em"] == ["e233d4a29013e9d87150c6237c6777bedf379ebf1acdc5d6126fec7e8bb74fb5"]
    assert "test_event_code" not in body


def test_map_event_body_is_compact_utf8_json():
    event = loaded(dict(seed(), event_name="Kauf_Bestätigt"))
    (p,) = adapter().map_event(event)
    assert p.body == json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert "Kauf_Bestätigt".encode() in p.body


def test_map_event_drops_null_pixel_fields_from_user_data():
    data = seed()
    for key in PIXEL_FIELDS:
        data["user_data"][key] = None
    data["event_source_url"] = ""
    data["client_context"] = None
    (p,) = adapter().map_event(loaded(data))
    body = body_of(p)

    assert set(body) == {"event_name", "event_time", "event_id", "action_source", "user_data", "custom_data"}
    assert set(body["user_data"]) == {"visitor_id", "session_id", "client_user_agent", "em", "external_id"}
    assert not contains_null(body)
    assert b"null" not in p.body


def test_map_event_leaves_out_fields_other_vendors_need():
    event = loaded()
    event["some_other_vendor_field"] = {"x": 1}
    event["test_event_code"] = "TEST9"
    body = body_of(adapter().map_event(event)[0])
    assert set(body) == set(EVENT_FIELDS)


def test_map_event_of_minimal_event():
    event = loaded({"event_name": "lead", "event_time": 1718973400, "event_id": "l-1"})
    body = body_of(adapter().map_event(event)[0])
    assert body == {
        "event_name": "Lead",
        "event_time": 1718973400,
        "event_id": "l-1",
        "action_source": "website",
        "user_data": {},
    }


def test_map_event_sends_no_nulls_even_inside_custom_data_and_client_context():
    data = seed()
    data["custom_data"]["value"] = None
    data["client_context"]["screen"] = None
    (p,) = adapter().map_event(loaded(data))
    assert not contains_null(body_of(p))


def test_group_is_the_events_test_event_code():
    event = dict(loaded(), test_event_code="TEST-EVENT")
    assert adapter(test_event_code="TEST-DEST").map_event(event)[0].group == "TEST-EVENT"


def test_group_falls_back_to_the_destinations_test_event_code():
    assert adapter(test_event_code="TEST-DEST").map_event(loaded())[0].group == "TEST-DEST"
    event = dict(loaded(), test_event_code=None)
    assert adapter(test_event_code="TEST-DEST").map_event(event)[0].group == "TEST-DEST"


def test_group_is_empty_without_any_test_event_code():
    assert adapter().map_event(loaded())[0].group == ""
    assert adapter().map_event(dict(loaded(), test_event_code=""))[0].group == ""


# --- envelope / body_for ----------------------------------------------------------------------


def test_body_for_live_group_is_data_list_without_test_event_code():
    a = adapter()
    parts = [p.body for p in a.map_event(loaded())] + parts_with_ids("x-2")
    document = json.loads(a.body_for("", parts))
    assert set(document) == {"data"}
    assert document["data"] == [json.loads(b) for b in parts]


def test_body_for_test_group_carries_top_level_test_event_code():
    a = adapter()
    parts = parts_with_ids("a", "b", "c")
    document = json.loads(a.body_for("TEST123", parts))
    assert document == {"data": [json.loads(b) for b in parts], "test_event_code": "TEST123"}


def test_envelope_escapes_odd_test_event_codes():
    a = adapter()
    code = 'TE"ST\\ü'
    document = json.loads(a.body_for(code, parts_with_ids("a")))
    assert document["test_event_code"] == code


def test_envelope_size_is_body_length_minus_parts():
    a = adapter()
    for group in ("", "TEST123"):
        parts = parts_with_ids("a", "b")
        assert a.envelope_size(group) == len(a.body_for(group, parts)) - sum(map(len, parts)) - 1
        assert a.envelope_size(group) == len(a.body_for(group, []))


# --- request_for ------------------------------------------------------------------------------


def test_request_is_post_to_gateway_events_with_bearer_key_in_header_only():
    a = adapter()
    body = a.body_for("", parts_with_ids("a"))
    request = a.request_for("", body)
    assert request.method == "POST"
    assert request.url == "https://api.trygravity.example/gateway/events"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == body
    assert API_KEY not in request.url
    assert "api_key" not in request.url
    assert not request.params


def test_request_url_keeps_base_path():
    request = adapter(base_url="http://127.0.0.1:8765/gravity-capi").request_for("", b"{}")
    assert request.url == "http://127.0.0.1:8765/gravity-capi/gateway/events"


# --- interpret --------------------------------------------------------------------------------


def test_interpret_200_maps_statuses_and_lists_only_errors():
    parts = parts_with_ids("a", "b", "c", "d", "e")
    body = ok_body(
        {"event_id": "a", "status": "ok"},
        {"event_id": "b", "status": "duplicate"},
        {"event_id": "c", "status": "error", "error": "event_time: must be an integer (UNIX seconds)"},
        {"event_id": "d", "status": "test_ok"},
        {"event_id": "e", "status": "skipped"},
    )
    outcome = adapter().interpret(200, {}, body, parts)
    assert outcome == Accepted(
        statuses=["ok", "duplicate", "error", "test_ok", "skipped"],
        errors={2: "event_time: must be an integer (UNIX seconds)"},
    )


def test_interpret_error_without_message_gets_a_placeholder():
    outcome = adapter().interpret(200, {}, ok_body({"event_id": "a", "status": "error"}), parts_with_ids("a"))
    assert outcome == Accepted(statuses=["error"], errors={0: "error without a message"})


def test_interpret_long_vendor_error_is_truncated():
    outcome = adapter().interpret(
        200, {}, ok_body({"event_id": "a", "status": "error", "error": "x" * 1000}), parts_with_ids("a")
    )
    assert outcome.errors[0] == "x" * 300


def test_interpret_unknown_per_event_status_is_an_error():
    parts = parts_with_ids("a", "b")
    body = ok_body({"event_id": "a", "status": "ok"}, {"event_id": "b", "status": "queued"})
    outcome = adapter().interpret(200, {}, body, parts)
    assert outcome == Accepted(statuses=["ok", "error"], errors={1: "unknown result status 'queued'"})


def test_interpret_result_that_is_not_an_object_is_an_error():
    parts = parts_with_ids("a", "b")
    body = json.dumps({"results": [{"event_id": "a", "status": "ok"}, "ok"]}).encode()
    outcome = adapter().interpret(200, {}, body, parts)
    assert outcome == Accepted(statuses=["ok", "error"], errors={1: "unknown result status None"})


def test_interpret_extra_results_are_matched_by_event_id():
    parts = parts_with_ids("a", "b")
    body = ok_body(
        {"event_id": "zzz", "status": "ok"},
        {"event_id": "b", "status": "error", "error": "bad b"},
        {"event_id": "a", "status": "duplicate"},
    )
    outcome = adapter().interpret(200, {}, body, parts)
    assert outcome == Accepted(statuses=["duplicate", "error"], errors={1: "bad b"})


def test_interpret_results_out_of_order_are_matched_by_event_id():
    parts = parts_with_ids("a", "b", "c")
    body = ok_body(
        {"event_id": "c", "status": "ok"},
        {"event_id": "b", "status": "error", "error": "bad b"},
        {"event_id": "a", "status": "duplicate"},
    )
    outcome = adapter().interpret(200, {}, body, parts)
    assert outcome == Accepted(statuses=["duplicate", "error", "ok"], errors={1: "bad b"})


def test_interpret_incomplete_results_without_match_are_unreadable():
    parts = parts_with_ids("a", "b")
    outcome = adapter().interpret(200, {}, ok_body({"event_id": "a", "status": "ok"}), parts)
    assert isinstance(outcome, RetryLater)
    assert outcome.reason == "unreadable_response"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Gateway says hi</html>",
        b"",
        b"\xff\xfe",
        b'{"events_received": 1}',
        b'{"results": "all good"}',
        b"[1, 2]",
        b'"ok"',
        b"null",
    ],
)
def test_interpret_unreadable_200_body_is_retry_later(body):
    outcome = adapter().interpret(200, {}, body, parts_with_ids("a"))
    assert isinstance(outcome, RetryLater)
    assert outcome.reason == "unreadable_response"
    assert outcome.status == 200


def test_interpret_unreadable_body_keeps_an_excerpt():
    outcome = adapter().interpret(200, {}, b"<html>\n  Gateway   says hi\n</html>", parts_with_ids("a"))
    assert outcome == RetryLater(reason="unreadable_response", status=200, excerpt="<html> Gateway says hi </html>")


def test_interpret_200_with_unhashable_event_ids_is_unreadable_not_a_crash():
    body = json.dumps({"results": [{"event_id": ["a"], "status": "ok"}]}).encode()
    outcome = adapter().interpret(200, {}, body, parts_with_ids("a", "b"))
    assert isinstance(outcome, RetryLater)
    assert outcome.reason == "unreadable_response"


def test_interpret_503_is_retry_later_with_retry_after():
    outcome = adapter().interpret(503, {"Retry-After": "30"}, b'{"error":"maintenance"}', parts_with_ids("a"))
    assert outcome == RetryLater(
        reason="http_503", status=503, retry_after_seconds=30.0, excerpt='{"error":"maintenance"}'
    )


def test_interpret_401_is_rejected():
    outcome = adapter().interpret(401, {}, b'{"error":"invalid API key"}', parts_with_ids("a"))
    assert outcome == Rejected(reason="http_401", status=401, excerpt='{"error":"invalid API key"}')


def test_interpret_413_is_too_large():
    assert isinstance(adapter().interpret(413, {}, b"", parts_with_ids("a", "b")), TooLarge)


# --- values and currency (issue 9: no invented values) -----------------------------------------


def sandbox_destination(sandbox: Any, **options: Any) -> DestinationSettings:
    return destination(base_url=sandbox.url_for("gravity-capi"), api_key="sandbox-key", options=options)


def post_to_sandbox(capi: GravityCapiAdapter, gravity: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Send the adapter's request for one event to the sandbox; return the event it stored."""
    (p,) = capi.map_event(event)
    request = capi.request_for(p.group, capi.body_for(p.group, [p.body]))
    response = requests.post(request.url, data=request.body, headers=dict(request.headers), timeout=5)
    assert response.json()["results"][0]["status"] == "ok", response.text
    return gravity.events[-1]


def without_currency(**custom_data: Any) -> dict[str, Any]:
    data = seed()
    data["custom_data"] = custom_data
    return loaded(data)


def test_value_without_currency_is_not_sent_for_the_vendor_to_count_as_usd(sandbox, gravity):
    """Before: the sandbox, like the vendor (seed 000, 'default: USD'), stored 99.99 USD."""
    event = without_currency(value=99.99, order_id="123", predicted_ltv=300.0,
                             contents=[{"id": "SKU-1", "quantity": 1, "item_price": 99.99}])  # fmt: skip
    stored = post_to_sandbox(GravityCapiAdapter(sandbox_destination(sandbox)), gravity, event)

    assert stored["custom_data"] == {"order_id": "123", "contents": [{"id": "SKU-1", "quantity": 1}]}
    assert stored["event_name"] == "Purchase"  # the conversion still counts, without a value


def test_value_without_currency_takes_the_destinations_default_currency(sandbox, gravity):
    event = without_currency(value=99.99, order_id="123")
    capi = GravityCapiAdapter(sandbox_destination(sandbox, default_currency="EUR"))
    stored = post_to_sandbox(capi, gravity, event)

    assert stored["custom_data"] == {"value": 99.99, "currency": "EUR", "order_id": "123"}


def test_the_events_own_currency_wins_over_default_currency(sandbox, gravity):
    event = without_currency(value=10.0, currency="GBP")
    capi = GravityCapiAdapter(sandbox_destination(sandbox, default_currency="EUR"))
    assert post_to_sandbox(capi, gravity, event)["custom_data"] == {"value": 10.0, "currency": "GBP"}


def test_missing_value_is_never_sent_as_zero(sandbox, gravity):
    event = without_currency(order_id="123", currency="EUR")
    stored = post_to_sandbox(GravityCapiAdapter(sandbox_destination(sandbox)), gravity, event)
    assert stored["custom_data"] == {"order_id": "123", "currency": "EUR"}


def test_event_without_money_gets_no_currency_from_default_currency():
    """A Lead with no value says nothing about money; a default currency adds nothing to it."""
    event = without_currency(order_id="lead-1")
    (p,) = adapter(options={"default_currency": "EUR"}).map_event(event)
    assert body_of(p)["custom_data"] == {"order_id": "lead-1"}


def test_default_currency_has_no_default_in_code_and_is_checked(tmp_path):
    from conversion_relay.config.settings import settings_from_document
    from conversion_relay.errors import ConfigurationError

    table = {"vendor": "gravity_capi", "api_key_env": "K"}
    document = {"relay": {"redis_url": "redis://127.0.0.1/0"}, "destinations": {"gravity": table}}
    assert "default_currency" not in settings_from_document(document, {}).destination("gravity").options

    table["default_currency"] = "EURO"
    with pytest.raises(ConfigurationError, match=r"destinations\.gravity\.default_currency: Not an ISO 4217"):
        settings_from_document(document, {})
