"""One sender per event: every event is in at most one request at a time, whatever the timing.

The scheduler and drains run in threads here (tests/inprocess.py) so every request is seen
with the events it carried; the Redis, the sandbox and the engine code are the real ones.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import orjson

from conversion_relay.engine.drain import Drainer
from conversion_relay.engine.runtime import Runtime
from conversion_relay.store.keys import GROUP
from conversion_relay.store.lease import Leases, consumer_name
from conversion_relay.store.stream import PartitionStream
from tests.conftest import reco_destination, tracify_destination
from tests.inprocess import Recorder, Workers
from tests.support import wait_for

#: A lease far shorter than the work a drain holds, so that only the heartbeat keeps it.
SHORT_LEASE = {"lease_seconds": 1.0, "drain_budget_seconds": 20.0, "visibility_timeout_seconds": 60.0}


def purchase(i: int, prefix: str = "o") -> dict[str, object]:
    """A one-item purchase: one part at every vendor, identified by its order id."""
    return {
        "event_name": "Purchase",
        "event_id": f"{prefix}-{i}",
        "event_source_url": "https://shop.example/thank-you",
        "user_data": {
            "external_id": [f"user-{i}"],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {
            "value": 10.0,
            "currency": "EUR",
            "order_id": f"{prefix}-{i}",
            "contents": [{"id": "SKU-1", "quantity": 1, "item_price": 10.0}],
        },
    }


def test_splits_that_outlast_the_lease_send_each_event_once(make_stack, sandbox, tracify):
    # Tracify answers 413 to more than one event a request: 16 events are split 16 > 8 > 4 > 2 > 1,
    # 31 requests one after another, far longer than the lease.
    tracify.configure(max_events_per_request=1, latency_seconds=0.15)
    stack = make_stack(relay=SHORT_LEASE, destinations={"tracify": tracify_destination(sandbox, max_events=16)})
    recorder = Recorder()
    ids = stack.relay.enqueue([purchase(i) for i in range(16)])
    with Workers(stack.settings, recorder):
        wait_for(lambda: len(tracify.events) == 16, timeout=60, what="every event at Tracify")
        stack.wait_settled("tracify")
    assert len(recorder.sent()) == 31
    assert recorder.overlapping() == []
    assert Counter(e["data"]["order_id"] for e in tracify.events) == Counter(ids)
    assert tracify.counters["duplicates"] == 0


def test_parallel_partitions_never_take_each_others_events(make_stack, sandbox, reco):
    # RECO has no dedup: an event sent twice is a purchase counted twice.  Two drains, small slow
    # requests, events still arriving: each drain holds far more events than it sends within a
    # lease, and the other drain always has work.
    reco.configure(latency_seconds=0.15)
    table = reco_destination(sandbox, parallel_drains=2, max_events=10)
    stack = make_stack(relay=SHORT_LEASE, destinations={"reco": table})
    recorder = Recorder()
    ids = stack.relay.enqueue([purchase(i) for i in range(300)])
    with Workers(stack.settings, recorder) as workers:
        for start in range(300, 600, 20):
            ids += stack.relay.enqueue([purchase(i) for i in range(start, start + 20)])
            time.sleep(0.1)
        wait_for(lambda: len(reco.events) >= 600, timeout=90, what="every event at RECO")
        stack.wait_settled("reco")
    assert reco.counters["resent_events"] == 0
    assert recorder.overlapping() == []
    sent = Counter(i for request in recorder.sent() for i in request.ids)
    assert set(sent) == set(ids) and set(sent.values()) == {1}
    assert {r.partition for r in workers.reports if r.read} == {0, 1}


def _held_by_a_drain(stack, destination: str, count: int) -> tuple[str, str]:
    """Give partition 0 to a drain that reads ``count`` events and then stops answering."""
    token = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire(destination, 0, token, stack.settings.lease_seconds)
    stream = PartitionStream(stack.redis, stack.keys, destination, 0)
    stream.ensure_group()
    consumer = consumer_name(0, token)
    assert len(stream.read(consumer, count)) == count
    return token, consumer


def test_a_dead_drains_events_wait_for_its_request_then_are_taken_over(make_stack, gravity):
    stack = make_stack(relay={"lease_seconds": 1.0})
    held = stack.relay.enqueue([{"event_name": "Lead", "event_id": f"held-{i}"} for i in range(5)])
    _, dead = _held_by_a_drain(stack, "gravity", 5)
    # It had a request in flight that may last 2 s more; then it died (no heartbeat).
    in_flight_until = time.time() + 2.0
    stack.redis.hset(stack.keys.inflight("gravity", 0), dead, int(in_flight_until * 1000))
    fresh = stack.relay.enqueue([{"event_name": "Lead", "event_id": f"fresh-{i}"} for i in range(3)])
    wait_for(lambda: not stack.redis.exists(stack.keys.lease("gravity", 0)), timeout=10, what="the lease to run out")

    recorder = Recorder()
    with Workers(stack.settings, recorder):
        wait_for(lambda: len(gravity.events) == 8, timeout=20, what="every event")
        stack.wait_settled()
    first_sent = {i: r.wall for r in recorder.sent() for i in r.ids}
    assert all(first_sent[i] < in_flight_until for i in fresh), "new events wait for the dead drain"
    assert all(first_sent[i] >= in_flight_until for i in held), "taken over while its request could be in flight"
    assert sorted(e["event_id"] for e in gravity.events) == sorted(held + fresh)
    assert stack.counters()["reclaimed"] == 5
    assert stack.redis.xinfo_consumers(stack.keys.stream("gravity"), GROUP) == []


def test_a_drain_that_lost_its_lease_before_a_request_sends_nothing(make_stack, gravity):
    stack = make_stack()
    stack.relay.enqueue([{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(5)])
    token = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire("gravity", 0, token, 5.0)
    rt = Runtime(stack.settings)
    drainer = Drainer(rt, "gravity", token, 0)
    recorder = Recorder()
    recorder.watch(rt, "gravity")
    # Just before the first request would be fenced, the lease passes to another drain.
    limiter = rt.destination("gravity").limiter
    acquire = limiter.acquire

    def steal() -> float:
        stack.redis.set(stack.keys.lease("gravity", 0), "someone-else")
        return acquire()

    limiter.acquire = steal  # type: ignore[method-assign]
    report = drainer.run()
    assert report.stopped == "lease_lost", report
    assert recorder.sent() == [] and gravity.requests == []
    assert stack.counters()["delivered"] == 0
    assert stack.admin.status()["gravity"]["backlog"]["pending"] == 5


def test_a_drain_that_lost_its_lease_during_a_request_records_nothing(make_stack, gravity):
    stack = make_stack()
    gravity.configure(latency_seconds=0.6)
    ids = stack.relay.enqueue([{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(5)])
    token = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire("gravity", 0, token, 5.0)
    stream = PartitionStream(stack.redis, stack.keys, "gravity", 0)
    heir = uuid.uuid4().hex
    seen_by_heir: list[tuple[list, int]] = []

    def new_owner_while_the_request_is_out() -> None:
        time.sleep(0.2)
        assert Leases(stack.redis, stack.keys).acquire("gravity", 0, heir, 5.0)
        seen_by_heir.append(stream.take_over(heir, consumer_name(0, heir)))

    def lease_passes(*_: object) -> None:
        stack.redis.delete(stack.keys.lease("gravity", 0))
        threading.Thread(target=new_owner_while_the_request_is_out).start()

    rt = Runtime(stack.settings)
    recorder = Recorder(before=lease_passes)
    recorder.watch(rt, "gravity")
    report = Drainer(rt, "gravity", token, 0).run()
    assert report.stopped == "lease_lost"
    assert len(recorder.sent()) == 1  # under way when the lease went; its answer is not recorded
    counters = stack.counters()
    assert counters["delivered"] == 0 and counters["requests"] == 0
    assert seen_by_heir == [([], 1)], "taken over while the old owner's request was in flight"
    # Once the old drain has stopped, nothing of it is in flight: the heir takes its events over.
    entries, busy = stream.take_over(heir, consumer_name(0, heir))
    assert busy == 0
    assert sorted(orjson.loads(e.fields[b"c"])["event_id"] for e in entries) == sorted(ids)
    assert {e.deliveries for e in entries} == {2}


def test_an_emptied_consumer_is_removed_in_the_script_that_saw_it_empty(make_stack):
    """A consumer that reads again after it was removed is simply a consumer again: what it
    reads is taken over, never stranded (the old two-step clean-up could strand it)."""
    stack = make_stack()
    stack.relay.enqueue([{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(2)])
    stream = PartitionStream(stack.redis, stack.keys, "gravity", 0)
    stream.ensure_group()
    old = "0:old-drain"
    first = stream.read(old, 1)
    stack.redis.xack(stream.key, GROUP, first[0].id)
    heir = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire("gravity", 0, heir, 5.0)
    assert stream.take_over(heir, consumer_name(0, heir)) == ([], 0)
    assert [c["name"] for c in stack.redis.xinfo_consumers(stream.key, GROUP)] == []
    second = stream.read(old, 1)  # the old drain, not knowing, reads once more
    entries, _ = stream.take_over(heir, consumer_name(0, heir))
    assert [e.id for e in entries] == [second[0].id]


def test_take_over_and_reads_racing_strand_nothing(make_stack):
    stack = make_stack()
    stream = PartitionStream(stack.redis, stack.keys, "gravity", 0)
    stream.ensure_group()
    heir = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire("gravity", 0, heir, 30.0)
    me = consumer_name(0, heir)
    stop = threading.Event()
    taken: list[str] = []

    def reader(name: str) -> None:
        while not stop.is_set():
            stream.read(name, 3)

    readers = [threading.Thread(target=reader, args=(f"0:reader-{n}",)) for n in range(3)]
    for thread in readers:
        thread.start()
    ids = [stack.redis.xadd(stream.key, {"c": b"{}"}).decode() for _ in range(600)]
    for _ in range(200):
        entries, _ = stream.take_over(heir, me)
        taken += [e.id for e in entries]
    stop.set()
    for thread in readers:
        thread.join()
    entries, busy = stream.take_over(heir, me)
    taken += [e.id for e in entries]
    assert busy == 0
    taken += [e.id for e in stream.read(me, 1000)]
    assert sorted(taken) == sorted(ids)
    assert [c["name"].decode() for c in stack.redis.xinfo_consumers(stream.key, GROUP)] == [me]


def test_a_drain_task_handed_out_again_owns_the_partition_in_one_run_only(make_stack, gravity):
    """The broker hands a drain task out again when its worker died (at once with RabbitMQ), with
    the same token.  The run that starts first takes the lease over to a token of its own, so
    the other run of the same task is fenced out; the events the first run held are taken over
    once its request could have ended, like any earlier drain's."""
    stack = make_stack()
    ids = stack.relay.enqueue([{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(4)])
    token, dead = _held_by_a_drain(stack, "gravity", 4)
    in_flight_until = time.time() + 1.0
    stack.redis.hset(stack.keys.inflight("gravity", 0), dead, int(in_flight_until * 1000))
    rt = Runtime(stack.settings)
    recorder = Recorder()
    recorder.watch(rt, "gravity")
    report = Drainer(rt, "gravity", token, 0).run()
    assert report.reclaimed == 4 and report.stopped == "idle"
    assert all(r.wall >= in_flight_until for r in recorder.sent())
    assert sorted(e["event_id"] for e in gravity.events) == sorted(ids)
    assert stack.admin.status()["gravity"]["backlog"] == {"unread": 0, "pending": 0}
    again = Drainer(Runtime(stack.settings), "gravity", token, 0).run()
    assert again.stopped == "lease_lost" and again.read == 0
