"""Size limits at the door: an event no request of its destinations could carry, and calls that
would hold Redis too long, are refused by ``enqueue`` instead of being dead-lettered later."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from conversion_relay import EventValidationError
from conversion_relay.client.limits import MAX_CALL_BYTES, MAX_CALL_ENTRIES, REQUEST_GROWTH, REQUEST_SLACK
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.vendors import adapter_for
from conversion_relay.vendors.base import Skip
from tests.conftest import all_destinations, destination, gravity_destination
from tests.ingest_task import ingest_for, run_enqueue_task
from tests.support import destination_settings


def stored(stack, name="gravity"):
    return stack.redis.xlen(stack.keys.stream(name))


def purchase(event_id, **custom):
    return {"event_name": "Purchase", "event_id": event_id, "custom_data": {"value": 1.0, "currency": "EUR", **custom}}


def test_an_event_too_large_for_a_request_of_one_of_its_destinations_is_refused(make_stack, sandbox, monkeypatch):
    """A 5 MB event used to be accepted, and dead-lettered later as too_large."""
    stack = make_stack(
        destinations={"gravity": gravity_destination(sandbox), "small": gravity_destination(sandbox, max_bytes=4000)}
    )
    ingest = ingest_for(stack, monkeypatch)
    huge = {**purchase("huge"), "client_context": {"blob": "x" * 5_000_000}}
    with pytest.raises(EventValidationError) as caught:
        stack.relay.enqueue([purchase("fine"), huge])
    assert list(caught.value.messages) == [1]
    assert list(caught.value.messages[1]) == ["client_context"]  # the field that makes it large
    text = str(caught.value)
    assert "event 1: client_context:" in text and "max_bytes of 1,000,000" in text and "'gravity'" in text

    # 6 kB fits a request of gravity (1 MB) but not of small (4,000 bytes): refused only with it.
    mid = purchase("mid", content_name="y" * 450, contents=[{"id": f"s-{n}", "title": "t" * 480} for n in range(12)])
    assert 4000 < len(orjson.dumps(canonical_schema().load(mid))) < 10_000
    with pytest.raises(EventValidationError, match="'small'.*max_bytes of 4,000"):
        stack.relay.enqueue(mid)
    result = run_enqueue_task(ingest, [mid], destinations=["gravity", "small"])
    assert result["accepted"] == 0 and "custom_data" in result["errors"][0]
    assert stored(stack) == 0 and stored(stack, "small") == 0
    assert stack.relay.enqueue(mid, destinations=["gravity"]) == ["mid"]
    assert stored(stack) == 1


def test_a_call_over_the_entry_or_byte_limit_is_refused_saying_how_to_split_it(make_stack, sandbox, monkeypatch):
    """One call of 20,000 events to four destinations used to hold Redis for 368 ms."""
    stack = make_stack(destinations=all_destinations(sandbox))
    ingest = ingest_for(stack, monkeypatch)
    many = [{"event_name": "Lead", "event_id": f"lead-{n}"} for n in range(MAX_CALL_ENTRIES // 4 + 1)]
    with pytest.raises(EventValidationError) as caught:
        stack.relay.enqueue(many)
    assert list(caught.value.messages) == ["events"]
    assert f"at most {MAX_CALL_ENTRIES:,}" in str(caught.value)
    assert f"Split it into calls of at most {MAX_CALL_ENTRIES // 4:,} events" in str(caught.value)
    result = run_enqueue_task(ingest, many)
    assert result["accepted"] == 0 and "Split it" in result["errors"]["events"][0]
    assert stored(stack) == 0

    # Bytes: 20 events of 250 kB each fit every request alone, but 5 MB x 4 destinations do not.
    heavy = [{**purchase(f"heavy-{n}"), "client_context": {"blob": "z" * 250_000}} for n in range(20)]
    with pytest.raises(EventValidationError, match=f"at most {MAX_CALL_BYTES:,}. Split it"):
        stack.relay.enqueue(heavy)
    assert stored(stack) == 0
    assert len(stack.relay.enqueue(heavy[:10], destinations=["gravity"])) == 10  # within the limit
    assert len(stack.relay.enqueue(many[:2500])) == 2500


def test_limits_are_arguments_of_the_relay(make_stack):
    stack = make_stack()
    from conversion_relay import Relay

    with Relay(stack.settings, max_call_entries=3, max_call_bytes=10**9) as relay:
        with pytest.raises(EventValidationError, match="at most 3 "):
            relay.enqueue([{"event_name": "Lead"}] * 4)
        assert len(relay.enqueue([{"event_name": "Lead"}] * 3)) == 3


# --- the rule that lets small events pass unmapped -------------------------------------------------

ADAPTERS = [
    adapter_for(destination_settings(name, table, TEST_GRAVITY_KEY="k"))
    for name, table in {
        "gravity": destination("gravity_capi", "http://127.0.0.1:1/g"),
        "gravity_test": destination("gravity_capi", "http://127.0.0.1:1/g", test_event_code="T" * 100),
        "field": destination("gravity_field", "http://127.0.0.1:1/f"),
        "tracify": destination(
            "tracify", "http://127.0.0.1:1/t", customer_site_id="00000000-0000-0000-0000-000000000000"
        ),
        "reco": destination("gravity_reco", "http://127.0.0.1:1/r/grrec-shop-war/WebshopServlet", username="u"),
    }.items()
]

text = st.text(max_size=60)
long_text = st.one_of(text, st.integers(0, 2048).map(lambda n: "u" * n))
item = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=256).filter(str.strip)},
    optional={
        "quantity": st.integers(0, 10**6),
        "item_price": st.floats(-1e9, 1e9),
        "title": st.text(max_size=500),
    },
)
NAMES = "Purchase AddToCart ViewContent PageView Search InitiateCheckout CompleteRegistration Login FilterItems Lead X"
event = st.fixed_dictionaries(
    {"event_name": st.sampled_from(NAMES.split())},
    optional={
        "event_source_url": long_text.map(lambda path: "https://shop.example/" + path),
        "test_event_code": st.text(min_size=1, max_size=100),
        "user_data": st.fixed_dictionaries(
            {},
            optional={
                "external_id": st.lists(st.text(min_size=1, max_size=256).filter(str.strip), max_size=10),
                "client_user_agent": long_text.map(lambda s: s[:1000]),
                "client_ip_address": st.sampled_from(["203.0.113.7", "2001:db8::1"]),
                "session_id": long_text.map(lambda s: s[:1000]),
                "visitor_id": long_text.map(lambda s: s[:1000]),
                "browser_id": long_text.map(lambda s: s[:1000]),
                "em": st.just(["jane@example.org"]),
            },
        ),
        "custom_data": st.fixed_dictionaries(
            {},
            optional={
                "value": st.floats(-1e9, 1e9),
                "currency": st.sampled_from(["EUR", "USD"]),
                "order_id": st.text(min_size=1, max_size=256).filter(str.strip),
                "contents": st.lists(item, max_size=60),
                "search_string": st.text(max_size=500),
                "filter_type": st.text(max_size=200),
                "filter_value": st.one_of(st.text(max_size=500), st.integers(-(10**9), 10**9)),
            },
        ),
        "page": st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["HOMEPAGE", "PRODUCT", "CART", "CATEGORY", "SEARCH", "OTHER"]),
                "location": long_text,
                "referrer": long_text,
                "language": st.text(max_size=20),
                "data": st.lists(st.text(max_size=500), max_size=20),
            },
        ),
        "client_context": st.dictionaries(st.text(max_size=20), st.text(max_size=200), max_size=5),
    },
)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(event)
def test_no_adapter_makes_a_request_for_one_event_much_larger_than_the_stored_event(raw):
    """The bound behind checking only large events with the adapters: a request carrying one
    event is at most REQUEST_GROWTH x its stored size + REQUEST_SLACK bytes, at every vendor."""
    try:
        loaded = canonical_schema("DE").load(json.loads(json.dumps(raw)))
    except ValidationError:  # generated text may look like an e-mail address: only valid events count
        return
    body = orjson.dumps(loaded)
    for adapter in ADAPTERS:
        try:
            parts = adapter.map_event(orjson.loads(body))
        except Skip:  # a vendor that cannot take the event sends no request for it
            continue
        for part in parts:
            assert adapter.envelope_size(part.group) + len(part.body) <= REQUEST_GROWTH * len(body) + REQUEST_SLACK
