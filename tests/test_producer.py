"""The producer call against a real private Redis (no worker needed)."""

from __future__ import annotations

import json

import pytest

from conversion_relay import EnqueueError, EventValidationError, Relay
from tests.support import free_port
from worker.keys import Keys


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
    from worker.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not configured"):
        producer.relay.enqueue({"event_name": "Lead"}, destinations=["nowhere"])


def test_unreachable_redis_raises_enqueue_error_without_the_url_password(producer):
    settings = producer.settings.replace(redis_url=f"redis://:s3cret@127.0.0.1:{free_port()}/1")
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
