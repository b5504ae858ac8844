"""The drain budget holds inside a round: no request starts after it, nothing held is lost.

A Gravity Field round sends one request per user, so a round can hold hundreds of requests.
The drain runs here on a clock the test moves: every request takes two seconds of it.
"""

from __future__ import annotations

import uuid
from typing import Any

from conversion_relay.engine.drain import Drainer
from conversion_relay.engine.runtime import Runtime
from conversion_relay.store.lease import Leases
from tests.conftest import field_destination, tracify_destination
from tests.fakes import FakeClock

REQUEST_SECONDS = 2.0
BUDGET = 5.0


def visit(i: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": f"order-{i}",
        "event_source_url": "https://shop.example/thank-you",
        "user_data": {
            "external_id": [f"u-{i}"],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {"value": 10.0, "currency": "EUR", "order_id": f"{i}"},
    }


def slow_drain(stack: Any, clock: FakeClock, starts: list[float], destination: str = "field") -> Drainer:
    """A drain of partition 0 whose every request takes ``REQUEST_SECONDS`` of ``clock``."""
    token = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire(destination, 0, token, stack.settings.lease_seconds)
    rt = Runtime(stack.settings)
    transport = rt.destination(destination).transport
    send = transport.send

    def slow(request: Any) -> Any:
        starts.append(clock.now)
        clock.now += REQUEST_SECONDS
        return send(request)

    transport.send = slow  # type: ignore[method-assign]

    def sleep(seconds: float) -> None:
        clock.now += seconds

    return Drainer(rt, destination, token, 0, clock=clock, sleep=sleep)


def test_no_request_starts_after_the_budget_and_the_rest_is_handed_over(make_stack, sandbox, field):
    stack = make_stack(relay={"drain_budget_seconds": BUDGET}, destinations={"field": field_destination(sandbox)})
    ids = stack.relay.enqueue([visit(i) for i in range(40)])  # 40 users: 40 requests
    clock = FakeClock(stack.redis.time()[0] + 0.0)
    starts: list[float] = []
    drainer = slow_drain(stack, clock, starts)
    budget_end = clock.now + BUDGET

    report = drainer.run()

    assert report.stopped == "budget_spent", (report, stack.counters("field"))
    assert starts and all(start < budget_end for start in starts)
    assert starts[-1] + REQUEST_SECONDS >= budget_end  # the next one would have started past it
    status = stack.admin.status()["field"]
    assert status["backlog"] == {"unread": 0, "pending": 0}
    waiting = stack.admin.waiting.list("field", 100)
    assert sum(len(b.parts) for b in waiting) == 40 - len(starts)
    assert all(b.next_attempt_at <= clock.now and b.attempts == 0 for b in waiting)

    # The next drain sends what was handed over, each event once.
    later: list[float] = []
    assert slow_drain(stack, clock, later).run().stopped in {"budget_spent", "idle"}
    while stack.admin.waiting.count("field"):
        slow_drain(stack, clock, later).run()
    sent = sorted(e["event"]["properties"]["uniqueTransactionId"] for e in field.events)
    assert sent == sorted(i.split("-")[1] for i in ids)
    assert stack.counters("field")["deferred"] == 40 - len(starts)


def test_a_split_stops_at_the_budget(make_stack, sandbox, tracify):
    """Halves of a refused request are requests too: past the budget they wait for the next drain."""
    tracify.configure(max_events_per_request=1)  # 8 events: 15 requests, 8 > 4+4 > 2+2+2+2 > 1...
    stack = make_stack(relay={"drain_budget_seconds": BUDGET}, destinations={"tracify": tracify_destination(sandbox)})
    ids = stack.relay.enqueue([visit(i) for i in range(8)])
    clock = FakeClock(stack.redis.time()[0] + 0.0)
    starts: list[float] = []
    budget_end = clock.now + BUDGET
    slow_drain(stack, clock, starts, "tracify").run()
    assert starts and all(start < budget_end for start in starts)
    assert starts[-1] + REQUEST_SECONDS >= budget_end
    waiting = stack.admin.waiting.list("tracify", 100)
    assert waiting and sum(len(b.parts) for b in waiting) + len(tracify.events) == 8
    while stack.admin.waiting.count("tracify"):
        slow_drain(stack, clock, starts, "tracify").run()
    assert sorted(e["data"]["order_id"] for e in tracify.events) == sorted(i.split("-")[1] for i in ids)
    assert stack.dead_letters("tracify") == []
