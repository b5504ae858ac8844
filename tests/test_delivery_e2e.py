"""End to end: producer → Redis → a real Celery worker → the Gravity sandbox over loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import pytest

from conversion_relay import Relay
from tests.support import wait_for


def send(stack, events, destination: str = "gravity") -> list[str]:
    """Enqueue for one destination of the shared stack (both point at the same sandbox)."""
    return stack.relay.enqueue(events, destinations=[destination])


def purchase(i: int, **extra: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_name": "Purchase",
        "event_id": f"order-{i}",
        "user_data": {"em": [f"customer{i}@example.com"], "external_id": [str(i)]},
        "custom_data": {"value": 10.0 + i, "currency": "EUR", "order_id": str(i)},
    }
    event.update(extra)
    return event


def test_events_are_delivered_in_vendor_sized_batches(stack, gravity):
    ids = send(stack, [purchase(i) for i in range(2500)])

    wait_for(lambda: gravity.counters["ok"] == 2500, what="2,500 events at the sandbox")
    stack.wait_settled()
    assert sorted(e["event_id"] for e in gravity.events) == sorted(ids)
    counts = [r["event_count"] for r in gravity.requests]
    assert max(counts) <= 1000
    assert len(counts) == 3, counts
    assert stack.counters()["delivered"] == 2500
    assert stack.dead_letters() == []


def test_api_key_travels_in_the_bearer_header_not_the_url(stack, gravity):
    send(stack, purchase(1))
    wait_for(lambda: gravity.counters["ok"] == 1)
    request = gravity.requests[0]
    assert request["auth"] == "bearer"
    assert request["query_keys"] == []


def test_delivered_personal_data_is_hashed(stack, gravity):
    send(stack, purchase(7, user_data={"em": ["Someone@Example.com"], "fn": "Ann", "ph": ["+4915112345678"]}))
    wait_for(lambda: gravity.counters["ok"] == 1)
    user_data = gravity.events[0]["user_data"]
    assert user_data["em"] == [hashlib.sha256(b"someone@example.com").hexdigest()]
    assert user_data["ph"] == [hashlib.sha256(b"+4915112345678").hexdigest()]
    assert user_data["fn"] == hashlib.sha256(b"ann").hexdigest()
    assert "someone@example.com" not in json.dumps(gravity.events)


def test_batches_respect_the_count_limit(stack, gravity):
    stack.relay.enqueue([purchase(i) for i in range(35)], destinations=["small"])
    wait_for(lambda: gravity.counters["ok"] == 35)
    stack.wait_settled("small")
    assert all(r["event_count"] <= 10 for r in gravity.requests)
    assert len(gravity.requests) == 4


def test_batches_respect_the_byte_limit(stack, gravity):
    padding = {"value": 1.0, "currency": "EUR", "content_name": "x" * 450, "content_category": "c" * 450}
    padded = [purchase(i, custom_data=padding) for i in range(9)]
    stack.relay.enqueue(padded, destinations=["small"])
    wait_for(lambda: gravity.counters["ok"] == 9)
    stack.wait_settled("small")
    assert all(r["bytes"] <= 4000 for r in gravity.requests)
    assert len(gravity.requests) >= 3
    assert sum(r["event_count"] for r in gravity.requests) == 9


def test_a_lone_event_leaves_by_the_flush_deadline(stack, gravity):
    send(stack, purchase(1))
    wait_for(lambda: gravity.counters["ok"] == 1, timeout=5, what="a lone event to leave")
    assert gravity.requests[0]["event_count"] == 1


def test_an_event_too_large_for_any_request_is_dead_lettered(stack, gravity):
    huge = purchase(1, custom_data={"value": 1.0, "currency": "EUR", "content_name": "y" * 450})
    contents = [{"id": f"sku-{n}", "quantity": 1, "item_price": 1.0, "title": "t" * 400} for n in range(10)]
    huge["custom_data"] = {**huge["custom_data"], "contents": contents}  # type: ignore[dict-item]
    # enqueue now refuses an event no request can carry (tests/test_limits.py); one stored
    # before the destination's max_bytes was lowered still reaches the drain, as here.
    earlier = dataclasses.replace(stack.settings.destination("small"), max_bytes=1_000_000)
    with Relay(
        dataclasses.replace(stack.settings, destinations={**stack.settings.destinations, "small": earlier})
    ) as before:
        before.enqueue([huge, purchase(2)], destinations=["small"])
    wait_for(lambda: len(stack.dead_letters("small")) == 1)
    wait_for(lambda: gravity.counters["ok"] == 1)
    letter = stack.dead_letters("small")[0]
    assert letter.reason == "too_large"
    assert json.loads(letter.parts[0])["event_id"] == "order-1"


def test_server_errors_are_retried_until_delivered(stack, gravity):
    gravity.configure(statuses=[503, 502, 500])
    send(stack, [purchase(i) for i in range(20)])
    wait_for(lambda: gravity.counters["ok"] == 20, what="delivery after three server errors")
    stack.wait_settled()
    assert [r["status"] for r in gravity.requests] == [503, 502, 500, 200]
    counters = stack.counters()
    assert counters["retried"] >= 20
    assert counters["dead_lettered"] == 0


def test_rate_limit_retry_after_is_honoured(stack, gravity):
    gravity.configure(statuses=[{"status": 429, "retry_after": "2"}])
    send(stack, [purchase(i) for i in range(5)])
    wait_for(lambda: gravity.counters["ok"] == 5, what="delivery after a 429")
    first, second = gravity.requests[0], gravity.requests[1]
    assert first["status"] == 429 and second["status"] == 200
    assert second["at"] - first["at"] >= 1.9


def test_dropped_connections_and_timeouts_are_retried(stack, gravity):
    gravity.configure(drop_connections=1)
    send(stack, [purchase(i) for i in range(3)])
    wait_for(lambda: gravity.counters["ok"] == 3)
    gravity.configure(latency_seconds=2.5)  # longer than the 2 s read timeout
    send(stack, purchase(99))
    wait_for(lambda: len(gravity.requests) >= 3, timeout=10)
    gravity.configure(latency_seconds=0.0)
    wait_for(lambda: stack.settled(), timeout=20, what="delivery after a timeout")
    assert stack.counters()["retried"] >= 4
    assert {e["event_id"] for e in gravity.events} >= {"order-0", "order-1", "order-2", "order-99"}


def test_payload_too_large_splits_the_batch(stack, gravity):
    gravity.configure(statuses=[413, 413])
    send(stack, [purchase(i) for i in range(40)])
    wait_for(lambda: gravity.counters["ok"] == 40)
    stack.wait_settled()
    statuses = [r["status"] for r in gravity.requests]
    counts = [r["event_count"] for r in gravity.requests]
    assert statuses[:2] == [413, 413]
    assert counts[0] == 40 and counts[1] == 20
    assert stack.counters()["split"] == 2
    assert stack.dead_letters() == []


def test_per_event_errors_dead_letter_only_those_events(stack, gravity):
    gravity.configure(event_error_prefix="bad-")
    events = [purchase(i) for i in range(10)] + [purchase(0, event_id="bad-1"), purchase(0, event_id="bad-2")]
    send(stack, events)
    stack.wait_settled()
    assert gravity.counters["ok"] == 10
    letter = stack.dead_letters()[0]
    assert letter.reason == "vendor_rejected_event"
    assert sorted(json.loads(p)["event_id"] for p in letter.parts) == ["bad-1", "bad-2"]
    assert set(letter.errors) == {"0", "1"} and "bad-" in letter.errors["0"]
    assert stack.counters()["dead_lettered"] == 2


@pytest.mark.parametrize("status", [400, 401, 403])
def test_client_errors_are_dead_lettered_with_the_reason(stack, gravity, status):
    gravity.configure(statuses=[{"status": status, "body": '{"error": "nope: bad things"}'}])
    send(stack, [purchase(i) for i in range(3)])
    wait_for(lambda: len(stack.dead_letters()) == 1)
    stack.wait_settled()
    letter = stack.dead_letters()[0]
    assert letter.reason == f"http_{status}"
    assert letter.status == status
    assert "nope" in letter.excerpt
    assert len(letter.parts) == 3
    assert len(gravity.requests) == 1


def test_duplicates_and_test_events_are_recorded_not_failed(stack, gravity):
    send(stack, purchase(1))
    wait_for(lambda: gravity.counters["ok"] == 1)
    send(stack, [purchase(1), purchase(2, test_event_code="TEST123")])
    wait_for(lambda: gravity.counters["duplicate"] == 1 and gravity.counters["test_ok"] == 1)
    stack.wait_settled()
    counters = stack.counters()
    assert (counters["delivered"], counters["duplicate"], counters["test_ok"]) == (1, 1, 1)
    assert stack.dead_letters() == []


def test_waiting_batches_show_attempts_and_next_attempt(stack, gravity):
    gravity.configure(fail_all_status=503)
    send(stack, [purchase(i) for i in range(4)])
    status = wait_for(lambda: stack.admin.status()["gravity"]["waiting"], what="a waiting batch")
    batch = status[0]
    assert batch["attempts"] >= 1 and batch["events"] == 4
    assert batch["next_attempt_at"] >= batch["last_failure_at"]
    assert batch["last_reason"] == "http_503"
    gravity.configure(fail_all_status=None)
    wait_for(lambda: gravity.counters["ok"] == 4)
    stack.wait_settled()
    assert time.time() - batch["first_failure_at"] < 60
