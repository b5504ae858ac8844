"""At-least-once through ``kill -9``: a worker killed mid-batch loses nothing."""

from __future__ import annotations

from tests.support import wait_for

CRASH_RELAY = {
    # Low so the test sees the take-over quickly: a dead drain's lease runs out after 2 s.
    "lease_seconds": 2.0,
    "drain_budget_seconds": 3.0,
}


def events(n, prefix):
    return [
        {"event_name": "Purchase", "event_id": f"{prefix}-{i}", "user_data": {"em": [f"c{i}@example.com"]}}
        for i in range(n)
    ]


def stored_ids(gravity):
    return {e["event_id"] for e in gravity.events}


def test_worker_killed_while_a_request_is_in_flight_loses_nothing(make_stack, gravity):
    stack = make_stack(relay=CRASH_RELAY)
    worker = stack.start_worker()
    gravity.configure(latency_seconds=1.5)
    ids = stack.relay.enqueue(events(3000, "kill"))

    wait_for(lambda: gravity.in_flight >= 1, timeout=20, what="a request in flight")
    worker.kill()
    gravity.configure(latency_seconds=0.0)
    backlog = stack.admin.status()["gravity"]["backlog"]
    assert backlog["unread"] + backlog["pending"] > 0, "the kill came too late to test anything"

    stack.start_worker()
    wait_for(lambda: stored_ids(gravity) >= set(ids), timeout=60, what="every event after the kill")
    stack.wait_settled()
    assert stored_ids(gravity) == set(ids)
    assert stack.dead_letters() == []
    assert stack.counters()["reclaimed"] > 0
    # What the dead worker had sent comes again, under the same event_id: the vendor deduplicates.
    assert gravity.counters["ok"] == 3000
    assert gravity.counters["duplicate"] == stack.counters()["duplicate"]


def test_worker_killed_while_sending_a_waiting_batch_loses_nothing(make_stack, gravity):
    stack = make_stack(relay={**CRASH_RELAY, "backoff_base_seconds": 0.5, "backoff_cap_seconds": 0.5})
    worker = stack.start_worker()
    # The vendor stays down until the batch is seen waiting: a single 503 would leave it waiting for a
    # jittered 0-0.5 s only, a window the test's polling can miss.
    gravity.configure(fail_all_status=503)
    ids = stack.relay.enqueue(events(50, "retry"))
    wait_for(lambda: stack.admin.waiting.count("gravity") == 1, what="the batch to wait for a retry")
    gravity.configure(latency_seconds=1.5, fail_all_status=None)
    wait_for(lambda: gravity.in_flight >= 1, timeout=20, what="the retry in flight")
    worker.kill()
    gravity.configure(latency_seconds=0.0)

    stack.start_worker()
    wait_for(lambda: stored_ids(gravity) >= set(ids), timeout=60, what="every event after the kill")
    stack.wait_settled()
    assert stack.dead_letters() == []
    assert stack.admin.waiting.count("gravity") == 0
