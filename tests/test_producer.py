"""The producer call against a real private Redis (no worker needed)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conversion_relay import EnqueueError, EventValidationError, Relay
from conversion_relay.schemas.untrusted import MAX_DEPTH
from conversion_relay.store.keys import Keys
from tests.conftest import gravity_destination
from tests.ingest_task import ingest_for, run_enqueue_task
from tests.support import free_port


@pytest.fixture
def producer(make_stack):
    return make_stack()


def stream_events(stack, destination="gravity"):
    entries = stack.redis.xrange(stack.keys.stream(destination))
    return [json.loads(fields[b"c"]) for _, fields in entries]


def test_enqueue_one_event_stores_it_hashed(producer):
    ids = producer.relay.enqueue(
        {
            "event_name": "Purchase",
            "event_id": "order-1",
            "user_data": {"em": "A@B.example"},
            "custom_data": {"value": 5, "currency": "eur"},
        }
    )
    assert ids == ["order-1"]
    [event] = stream_events(producer)
    assert event["event_id"] == "order-1"
    assert event["custom_data"] == {"value": 5.0, "currency": "EUR"}
    assert len(event["user_data"]["em"][0]) == 64
    assert producer.counters()["accepted"] == 1


def test_enqueue_a_list_returns_ids_in_order_and_fills_missing_ones(producer):
    ids = producer.relay.enqueue(
        [{"event_name": "Lead", "event_id": "a"}, {"event_name": "Lead"}, {"event_name": "Lead", "event_id": 7}]
    )
    assert ids[0] == "a" and ids[2] == "7"
    assert len(ids[1]) == 32
    assert [e["event_id"] for e in stream_events(producer)] == ids


def test_a_rejected_list_enqueues_nothing_and_names_each_bad_field(producer):
    events = [
        {"event_name": "Purchase", "event_id": "fine"},
        {"event_name": "Purchase", "user_data": {"em": ["not an address"]}},
        {"event_id": "x", "custom_data": {"currency": "EURO"}},
    ]
    with pytest.raises(EventValidationError) as caught:
        producer.relay.enqueue(events)
    error = caught.value
    assert set(error.messages) == {1, 2}
    text = str(error)
    assert "nothing was enqueued" in text
    assert "event 1: user_data.em.0:" in text
    assert "event 2: event_name: Missing data for required field." in text
    assert "event 2: custom_data.currency:" in text
    assert "not an address" not in text
    assert producer.redis.exists(producer.keys.stream("gravity")) == 0
    assert producer.counters()["accepted"] == 0


def test_wrong_top_level_types_are_refused(producer):
    for bad in ("Purchase", 42, None):
        with pytest.raises(EventValidationError):
            producer.relay.enqueue(bad)
    assert producer.relay.enqueue([]) == []


def test_unknown_destination_is_a_configuration_error(producer):
    from conversion_relay.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not configured") as caught:
        producer.relay.enqueue({"event_name": "Lead"}, destinations=["nowhere"])
    assert isinstance(caught.value, EventValidationError)
    assert list(caught.value.messages) == ["destinations"]


def test_destinations_that_would_store_nowhere_twice_or_for_no_drain_are_refused(make_stack, sandbox, monkeypatch):
    """``[]`` used to return ids and store nothing, a repeated name stored the event twice, and a
    disabled destination took events into a stream no drain reads."""
    stack = make_stack(
        relay={"enqueue_dedup_seconds": 0},
        destinations={"gravity": gravity_destination(sandbox), "paused": gravity_destination(sandbox, enabled=False)},
    )
    ingest = ingest_for(stack, monkeypatch)
    cases = {(): "Empty", ("gravity", "gravity"): "'gravity' is named twice", ("paused",): "set enabled = true"}
    for names, hint in cases.items():
        with pytest.raises(EventValidationError) as caught:
            stack.relay.enqueue({"event_name": "Lead"}, destinations=list(names))
        assert list(caught.value.messages) == ["destinations"]
        assert hint in str(caught.value)
        result = run_enqueue_task(ingest, [{"event_name": "Lead"}], destinations=list(names))
        assert result["accepted"] == 0 and hint in str(result["errors"]["destinations"])
    for junk in (5, [5], {"gravity": True}):
        result = run_enqueue_task(ingest, [{"event_name": "Lead"}], destinations=junk)
        assert "Not a list of destination names" in str(result["errors"]["destinations"])
    assert stack.redis.xlen(stack.keys.stream("gravity")) == 0
    assert stack.redis.xlen(stack.keys.stream("paused")) == 0
    assert stack.relay.enqueue({"event_name": "Lead", "event_id": "once"}, destinations=["gravity"]) == ["once"]
    assert [e["event_id"] for e in stream_events(stack)] == ["once"]


def nested(levels: int) -> dict:
    """``client_context`` that makes the event ``levels`` levels of objects deep."""
    inner: dict = {"leaf": 1}
    for _ in range(levels - 2):
        inner = {"a": inner}
    return inner


def test_numbers_json_cannot_carry_deep_nesting_and_bad_text_are_refused_under_their_field(producer, monkeypatch):
    """NaN and Infinity in event_time raised a bare ValueError or OverflowError, NaN in
    client_context was stored as null, 1,000 levels of client_context raised RecursionError, and
    a lone surrogate in event_name was reported under client_context."""
    ingest = ingest_for(producer, monkeypatch)
    lead = {"event_name": "Lead", "event_id": "x"}
    thousand = nested(1000)
    cases = [
        ({**lead, "event_time": float("nan")}, "event_time", "finite"),
        ({**lead, "event_time": float("inf")}, "event_time", "finite"),
        ({**lead, "client_context": {"screen": {"width": float("nan")}}}, "client_context", "finite"),
        ({**lead, "custom_data": {"contents": [{"id": "a", "item_price": float("-inf")}]}}, "custom_data", "finite"),
        ({**lead, "client_context": thousand}, "client_context", f"deeper than {MAX_DEPTH} levels"),
        ({**lead, "client_context": nested(MAX_DEPTH + 1)}, "client_context", f"deeper than {MAX_DEPTH} levels"),
        ({**lead, "event_name": "Le\ud800ad"}, "event_name", "lone surrogate"),
        ({**lead, "event_source_url": "https://shop.example/\udc00"}, "event_source_url", "lone surrogate"),
        ({**lead, "client_context": {"screen": {"width": 10**30}}}, "client_context", "64-bit"),
    ]
    for event, field, hint in cases:
        with pytest.raises(EventValidationError) as caught:
            producer.relay.enqueue(event)
        assert list(caught.value.messages) == [field], (field, caught.value.messages)
        assert hint in str(caught.value)
        if event.get("client_context") is thousand:
            event = {**lead, "client_context": nested(400)}  # as deep as a JSON message decodes here
        result = run_enqueue_task(ingest, [event])
        assert result["accepted"] == 0 and list(result["errors"][0]) == [field]
    assert producer.redis.xlen(producer.keys.stream("gravity")) == 0
    deepest = {**lead, "client_context": nested(MAX_DEPTH)}
    assert producer.relay.enqueue(deepest) == ["x"]
    assert stream_events(producer)[0]["client_context"] == deepest["client_context"]


def test_unreachable_redis_raises_enqueue_error_without_the_url_password(producer):
    settings = dataclasses.replace(producer.settings, redis_url=f"redis://:s3cret@127.0.0.1:{free_port()}/1")
    relay = Relay(settings)
    with pytest.raises(EnqueueError) as caught:
        relay.enqueue({"event_name": "Lead"})
    assert "nothing was enqueued" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_keys_use_the_configured_prefix(make_stack):
    stack = make_stack(relay={"key_prefix": "shop1"})
    stack.relay.enqueue({"event_name": "Lead"})
    assert stack.redis.exists(Keys("shop1").stream("gravity")) == 1
    assert stack.redis.exists(Keys("cr").stream("gravity")) == 0


def test_enqueue_survives_a_redis_that_forgot_its_scripts(producer):
    producer.relay.enqueue({"event_name": "Lead", "event_id": "before"})
    producer.redis.script_flush()  # as after a Redis restart
    assert producer.relay.enqueue({"event_name": "Lead", "event_id": "after"}) == ["after"]
    assert [e["event_id"] for e in stream_events(producer)] == ["before", "after"]
