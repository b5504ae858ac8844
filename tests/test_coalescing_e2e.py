"""Single-event enqueues become full vendor batches, from any number of producer processes."""

from __future__ import annotations

import multiprocessing as mp

from conversion_relay import Relay
from conversion_relay.config.settings import load_settings
from tests.support import wait_for


def lead(i: int, prefix: str = "lead") -> dict[str, object]:
    return {"event_name": "Lead", "event_id": f"{prefix}-{i}", "user_data": {"em": [f"l{i}@example.com"]}}


def test_single_event_calls_leave_in_full_batches(make_stack, gravity):
    stack = make_stack()
    # Hold the destination back while the calls arrive, as a burst of traffic would.
    stack.redis.set(stack.keys.pause("gravity"), "1", px=600_000)
    stack.start_worker()
    for i in range(2500):
        stack.relay.enqueue(lead(i))
    assert gravity.requests == []
    stack.redis.delete(stack.keys.pause("gravity"))
    wait_for(lambda: gravity.counters["ok"] == 2500)
    stack.wait_settled()
    assert [r["event_count"] for r in gravity.requests] == [1000, 1000, 500]


def _produce(env: dict[str, str], prefix: str, count: int) -> None:
    relay = Relay(load_settings(env))
    for i in range(count):
        relay.enqueue(lead(i, prefix))


def test_enqueues_from_several_processes_arrive_once_each(make_stack, gravity):
    stack = make_stack()
    stack.start_worker()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_produce, args=(stack.env, f"p{n}", 400)) for n in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    wait_for(lambda: gravity.counters["ok"] == 1200, what="1,200 events from three processes")
    stack.wait_settled()
    ids = [e["event_id"] for e in gravity.events]
    assert len(ids) == len(set(ids)) == 1200
    assert gravity.counters["duplicate"] == 0
    assert stack.counters()["accepted"] == 1200
    assert len(gravity.requests) < 1200  # coalesced, whatever the timing
