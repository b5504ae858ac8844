"""A failing destination is probed on a capped schedule, and recovery lets everything go at once.

The drains run on a clock the test moves and with the jitter pinned (``rand`` = 1: every wait
its full length), against the real Redis and sandbox.
"""

from __future__ import annotations

import uuid
from typing import Any

from conversion_relay.engine.drain import Drainer
from conversion_relay.engine.runtime import Runtime
from conversion_relay.store.lease import Leases
from conversion_relay.store.waiting import WaitingBatch
from tests.fakes import FakeClock

BREAKER = {"probe_interval_seconds": 2.0, "backoff_base_seconds": 1.0, "backoff_cap_seconds": 600.0}


def leads(n: int, prefix: str = "lead") -> list[dict[str, Any]]:
    return [{"event_name": "Lead", "event_id": f"{prefix}-{i}"} for i in range(n)]


def drain(stack: Any, clock: FakeClock) -> Drainer:
    token = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire("gravity", 0, token, stack.settings.lease_seconds)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    return Drainer(Runtime(stack.settings), "gravity", token, 0, clock=clock, sleep=sleep, rand=lambda: 1.0)


def paused_for(stack: Any, clock: FakeClock) -> float:
    until = stack.admin.status()["gravity"]["backing_off_until"]
    return 0.0 if until is None else until - clock.now


def until_delivered(stack: Any, gravity: Any, clock: FakeClock, events: int, drains: int = 15) -> list[float]:
    """Run drains, moving the clock past each back-off, until ``events`` are stored; the pauses."""
    pauses = []
    for _ in range(drains):
        drain(stack, clock).run()
        if len(gravity.events) >= events:
            return pauses
        pauses.append(paused_for(stack, clock))
        clock.now += max(pauses[-1], 0.0) + 0.01
    raise AssertionError(f"not delivered after {drains} drains; pauses {pauses}")


def park(stack: Any, clock: FakeClock, events: list[dict[str, Any]], due_in: float) -> WaitingBatch:
    """A batch an earlier failure left waiting, with a long backoff ahead of it."""
    from conversion_relay.vendors import adapter_for

    adapter = adapter_for(stack.settings.destination("gravity"))
    loaded = stack.relay._many.load(events)
    parts = [part.body.decode() for event in loaded for part in adapter.map_event(event)]
    batch = WaitingBatch("gravity", "", parts, 5, clock.now - 60, clock.now - 1, clock.now + due_in, 503, "http_503")
    pipe = stack.redis.pipeline()
    stack.admin.waiting.park(pipe, batch)
    pipe.execute()
    return batch


def test_a_failing_destination_is_probed_at_most_every_probe_interval(make_stack, gravity):
    stack = make_stack(relay=BREAKER)
    gravity.configure(statuses=[503] * 6)
    stack.relay.enqueue(leads(10))
    clock = FakeClock(stack.redis.time()[0] + 0.0)
    pauses = until_delivered(stack, gravity, clock, 10)
    assert len(pauses) == 6 and max(pauses) <= 2.0
    assert [r["status"] for r in gravity.requests] == [503] * 6 + [200]  # one probe per pause
    assert stack.admin.waiting.count("gravity") == 0 and stack.dead_letters() == []


def test_recovery_after_an_outage_makes_every_waiting_batch_due_at_once(make_stack, gravity):
    stack = make_stack(relay=BREAKER)
    clock = FakeClock(stack.redis.time()[0] + 0.0)
    park(stack, clock, leads(5, "older"), due_in=500.0)
    gravity.configure(statuses=[503] * 4)
    stack.relay.enqueue(leads(10))
    until_delivered(stack, gravity, clock, 15)
    assert clock.now < stack.redis.time()[0] + 100  # well before the older batch's own due time
    assert {e["event_id"] for e in gravity.events} >= {f"older-{i}" for i in range(5)}


def test_a_lone_failure_leaves_other_batches_schedules_alone(make_stack, gravity):
    stack = make_stack(relay=BREAKER)
    clock = FakeClock(stack.redis.time()[0] + 0.0)
    older = park(stack, clock, leads(5, "older"), due_in=500.0)
    gravity.configure(statuses=[503])
    stack.relay.enqueue(leads(10))
    until_delivered(stack, gravity, clock, 10)
    waiting = stack.admin.waiting.list("gravity")
    assert [b.id for b in waiting] == [older.id] and waiting[0].next_attempt_at == older.next_attempt_at


def test_retry_after_is_honoured_beyond_the_probe_interval(make_stack, gravity):
    stack = make_stack(relay=BREAKER)
    gravity.configure(statuses=[{"status": 429, "retry_after": "7"}])
    stack.relay.enqueue(leads(3))
    clock = FakeClock(stack.redis.time()[0] + 0.0)
    drain(stack, clock).run()
    assert 7.0 <= paused_for(stack, clock) <= 7.5


def test_status_shows_the_run_of_failures_until_the_vendor_answers(make_stack, gravity):
    stack = make_stack(relay=BREAKER)
    gravity.configure(statuses=[503, 503])
    stack.relay.enqueue(leads(3))
    clock = FakeClock(stack.redis.time()[0] + 0.0)
    drain(stack, clock).run()
    failing = stack.admin.status()["gravity"]["failing"]
    assert failing["failures"] == 1 and failing["since"] <= clock.now
    until_delivered(stack, gravity, clock, 3)
    assert stack.admin.status()["gravity"]["failing"] is None
