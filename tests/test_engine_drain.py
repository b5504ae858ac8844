"""Every way a drain ends (``DrainReport.stopped``), and what it decides without a request.

The drain (:class:`~conversion_relay.engine.drain.Drainer`) runs in the test's thread on a fake
clock and a fake transport, against a private Redis: a budget is spent by requests that each
take two seconds of the fake clock, a back-off is a pause key set for thirty of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conversion_relay import Relay
from conversion_relay.engine.drain import HELD_REQUESTS, Drainer, DrainReport
from conversion_relay.engine.runtime import Runtime
from conversion_relay.store.keys import GROUP
from conversion_relay.store.lease import Leases
from conversion_relay.store.waiting import WaitingBatch
from tests.conftest import DATA_DB
from tests.fakes import (
    FakeClock,
    FakeTransport,
    FixedRandom,
    Reply,
    SentRequest,
    at,
    dead_letters_of,
    engine_settings,
    gravity_table,
    paused_until,
    stats_of,
    stream_of,
    waiting_of,
)
from tests.support import RedisServer

RELAY = {
    "flush_deadline_seconds": 0.05,  # an idle drain waits this long (really) for a first event
    "drain_budget_seconds": 5.0,
    "lease_seconds": 5.0,
    "backoff_base_seconds": 10.0,
    "probe_interval_seconds": 5.0,
}


def purchase(i: int, items: int = 0) -> dict[str, Any]:
    """A purchase, with ``items`` line items of about 330 bytes each."""
    event: dict[str, Any] = {"event_name": "Purchase", "event_id": f"e-{i}", "user_data": {"external_id": [f"u-{i}"]}}
    if items:
        event["custom_data"] = {"contents": [{"id": f"sku-{n}-" + "x" * 300, "quantity": 1} for n in range(items)]}
    return event


def all_ok(request: SentRequest) -> Reply:
    return Reply(200, {"results": [{"event_id": e["event_id"], "status": "ok"} for e in request.json()["data"]]})


def ids(request: SentRequest) -> list[str]:
    return [e["event_id"] for e in request.json()["data"]]


class Partition:
    """Partition 0 of one destination, its drains run one after another in one runtime."""

    def __init__(self, redis_url: str, table: dict[str, Any], *, request_seconds: float = 0.0, **relay: Any) -> None:
        self.settings = engine_settings(redis_url, {"gravity": table}, **{**RELAY, **relay})
        self.producer = Relay(self.settings)
        self.rt = Runtime(self.settings, transport_for=self._transport)
        self.redis = self.rt.redis
        self.keys = self.rt.keys
        self.clock = FakeClock.at_redis_time(self.redis)
        self.request_seconds = request_seconds
        self.transport: FakeTransport = self.rt.destination("gravity").transport  # type: ignore[assignment]

    def _transport(self, destination: Any) -> FakeTransport:
        return FakeTransport(destination, clock=self.clock, request_seconds=self.request_seconds)

    def enqueue(self, n: int, start: int = 0, items: int = 0) -> list[str]:
        return self.producer.enqueue([purchase(i, items) for i in range(start, start + n)])

    def drainer(self) -> Drainer:
        """A drain as the scheduler starts one: the partition's lease taken for its task's token."""
        token = uuid.uuid4().hex
        assert Leases(self.redis, self.keys).acquire("gravity", 0, token, self.settings.lease_seconds)
        return Drainer(self.rt, "gravity", token, 0, clock=self.clock, sleep=self.clock.sleep, rand=FixedRandom(0.5))

    def drain(self) -> DrainReport:
        return self.drainer().run()

    def stats(self) -> dict[str, int]:
        return stats_of(self.redis, self.settings, "gravity")

    def letters(self) -> list[dict[str, Any]]:
        return dead_letters_of(self.redis, self.settings, "gravity")

    def waiting(self) -> list[dict[str, Any]]:
        return waiting_of(self.redis, self.settings, "gravity")

    def backlog(self) -> dict[str, int]:
        return stream_of(self.redis, self.settings, "gravity")

    def close(self) -> None:
        self.producer.close()
        self.redis.close()


@pytest.fixture
def make_partition(redis_server: RedisServer, data: Any) -> Iterator[Any]:
    built: list[Partition] = []

    def build(table: dict[str, Any] | None = None, redis_url: str | None = None, **options: Any) -> Partition:
        partition = Partition(redis_url or redis_server.url(DATA_DB), table or gravity_table(), **options)
        built.append(partition)
        return partition

    yield build
    for partition in built:
        partition.close()


@pytest.fixture
def partition(make_partition: Any) -> Partition:
    return make_partition()


# How a drain ends.


def test_an_empty_partition_ends_idle_without_a_request(partition):
    report = partition.drain()

    assert report.stopped == "idle" and report.read == 0 and report.batches == 0
    assert partition.transport.requests == []
    assert partition.redis.exists(partition.keys.lease("gravity", 0)) == 0  # given back


def test_a_drain_sends_what_it_reads_and_ends_idle_when_the_stream_runs_dry(partition):
    partition.enqueue(5)
    partition.transport.default = all_ok

    report = partition.drain()

    assert report.stopped == "idle" and report.read == 5
    assert [ids(r) for r in partition.transport.requests] == [["e-0", "e-1", "e-2", "e-3", "e-4"]]
    assert report.outcomes == {"Accepted": 1}
    assert partition.stats() == {"accepted": 5, "delivered": 5, "requests": 1}
    assert partition.backlog() == {"length": 0, "pending": 0}


def test_the_budget_ends_a_drain_and_what_it_holds_waits_due_at_once(make_partition):
    partition = make_partition(gravity_table(max_events=1), request_seconds=2.0)
    partition.enqueue(6)
    partition.transport.default = all_ok
    budget_end = partition.clock.now + RELAY["drain_budget_seconds"]

    report = partition.drain()

    assert report.stopped == "budget_spent"
    assert [r.at - budget_end for r in partition.transport.requests] == pytest.approx([-5.0, -3.0, -1.0])
    assert [ids(r) for r in partition.transport.requests] == [["e-0"], ["e-1"], ["e-2"]]
    # The next request would have started at the budget's end: what the drain read waits, due at once.
    handed_over = partition.waiting()
    assert sorted(p["event_id"] for b in handed_over for p in b["parts"]) == ["e-3", "e-4", "e-5"]
    assert all(b["attempts"] == "0" and b["due"] == partition.clock.now for b in handed_over)
    assert partition.stats() == {"accepted": 6, "requests": 3, "delivered": 3, "deferred": 3, "waiting": 3}
    assert partition.backlog() == {"length": 0, "pending": 0}


def test_a_destination_backing_off_ends_the_drain_before_it_reads(partition):
    partition.enqueue(2)
    until = partition.clock.now + 30.0
    partition.redis.set(partition.keys.pause("gravity"), repr(until), px=30_000)

    report = partition.drain()

    assert report.stopped == "backing_off" and report.read == 0
    assert partition.transport.requests == []
    assert partition.backlog() == {"length": 2, "pending": 0}


def test_a_transient_failure_ends_the_drain_backing_off(make_partition):
    partition = make_partition(gravity_table(max_events=2))
    partition.enqueue(6)
    partition.transport.answer(Reply(503, b"down"))

    report = partition.drain()

    assert report.stopped == "backing_off" and len(partition.transport.requests) == 1
    assert paused_until(partition.redis, partition.settings, "gravity") == at(partition.clock.now + 3.75)
    retried = [b for b in partition.waiting() if b["attempts"] == "1"]
    assert [len(b["parts"]) for b in retried] == [2] and retried[0]["last_reason"] == "http_503"
    # Whatever else it had read waits for the end of the pause, attempts unchanged.
    assert all(b["due"] >= partition.clock.now for b in partition.waiting())
    assert partition.backlog()["pending"] == 0


def test_a_drain_whose_task_token_no_longer_holds_the_lease_ends_at_once(partition):
    partition.enqueue(2)
    drainer = partition.drainer()
    partition.redis.set(partition.keys.lease("gravity", 0), "a-later-task")  # the lease ran out, retaken

    report = drainer.run()

    assert report.stopped == "lease_lost" and report.read == 0
    assert partition.transport.requests == []
    assert partition.redis.get(partition.keys.lease("gravity", 0)) == b"a-later-task"
    assert partition.backlog() == {"length": 2, "pending": 0}


def test_a_drain_that_loses_its_lease_during_a_request_ends_and_records_nothing(partition):
    partition.enqueue(3)

    def taken_meanwhile(request: SentRequest) -> Reply:
        partition.redis.set(partition.keys.lease("gravity", 0), "the-next-owner")
        return all_ok(request)

    partition.transport.answer(taken_meanwhile)

    report = partition.drain()

    assert report.stopped == "lease_lost"
    assert len(partition.transport.requests) == 1
    assert partition.stats() == {"accepted": 3}
    # The events stay with the drain's consumer, for the next owner to take over.
    assert partition.backlog() == {"length": 3, "pending": 3}
    assert partition.redis.get(partition.keys.lease("gravity", 0)) == b"the-next-owner"


def test_a_drain_whose_redis_goes_away_ends_redis_unavailable(make_partition, caplog):
    own = RedisServer()
    try:
        partition = make_partition(redis_url=own.url(0))
        partition.enqueue(2)

        def redis_dies(request: SentRequest) -> Reply:
            own.kill()
            return all_ok(request)

        partition.transport.answer(redis_dies)

        report = partition.drain()

        assert report.stopped == "redis_unavailable" and len(partition.transport.requests) == 1
        assert "Redis failed" in caplog.text
    finally:
        own.stop()


# What a drain decides without a request (docs/design.md, failure classes).


def test_an_event_the_destination_skips_is_counted_by_reason(partition):
    partition.producer.enqueue([{"event_name": "PageView", "event_id": "pv-1"}])

    report = partition.drain()

    assert report.stopped == "idle" and partition.transport.requests == []
    assert partition.stats() == {"accepted": 1, "skipped": 1, "skipped:skip_events": 1}
    assert partition.backlog() == {"length": 0, "pending": 0}


def test_an_entry_that_cannot_be_mapped_is_dead_lettered_as_stored(partition):
    stream = partition.keys.stream("gravity", 0)
    partition.redis.xadd(stream, {"c": b'{"event_name": "Purchase", "user_data": [broken'})

    partition.drain()

    assert partition.transport.requests == []
    [letter] = partition.letters()
    assert letter["reason"] == "mapping_error" and letter["entry_field"] == "c"
    assert partition.backlog() == {"length": 0, "pending": 0}


def test_an_entry_handed_out_too_often_is_dead_lettered_redelivered_too_often(make_partition):
    partition = make_partition(max_deliveries=1)
    partition.enqueue(1)
    stream = partition.keys.stream("gravity", 0)
    partition.redis.xgroup_create(stream, GROUP, id="0")
    partition.redis.xreadgroup(GROUP, "0:a-drain-that-died", {stream: ">"})  # no request in flight

    report = partition.drain()

    assert report.reclaimed == 1 and partition.transport.requests == []
    [letter] = partition.letters()
    assert letter["reason"] == "redelivered_too_often" and letter["excerpt"] == "handed out 2 times without an outcome"
    assert partition.stats() == {
        "accepted": 1,
        "reclaimed": 1,
        "dead_lettered": 1,
        "dead_lettered:redelivered_too_often": 1,
    }
    assert partition.backlog() == {"length": 0, "pending": 0}


def test_an_event_too_large_for_any_request_is_dead_lettered_without_one(make_partition):
    big = make_partition()
    big.enqueue(1, items=6)
    big.enqueue(1, start=1)
    small = make_partition(gravity_table(max_bytes=1024))  # lowered since the event was stored
    small.transport.default = all_ok

    small.drain()

    assert [ids(r) for r in small.transport.requests] == [["e-1"]]
    [letter] = small.letters()
    assert letter["reason"] == "too_large" and letter["excerpt"] == "one event is over the 1024-byte request limit"
    assert [p["event_id"] for p in letter["parts"]] == ["e-0"]


def test_a_drain_holds_at_most_its_byte_cap_of_large_events(make_partition):
    max_bytes = 8000
    partition = make_partition(gravity_table(max_bytes=max_bytes, max_events=1000))
    partition.enqueue(60, items=3)  # about 60 kB: more than the 32 kB a drain may hold
    partition.transport.default = all_ok

    report = partition.drain()

    assert report.stopped == "idle" and report.read == 60
    assert 0 < report.held_bytes_peak <= HELD_REQUESTS * max_bytes
    assert partition.stats()["delivered"] == 60
    assert all(len(r.body) <= max_bytes for r in partition.transport.requests)


# Waiting batches: sent when due, and as the probe while the destination is down.


def park(partition: Partition, due_in: float, attempts: int) -> WaitingBatch:
    now = partition.clock.now
    part = '{"event_name":"Lead","event_id":"w-1"}'
    batch = WaitingBatch("gravity", "", [part], attempts, now - 60, now - 1, now + due_in, 503, "http_503")
    pipe = partition.redis.pipeline()
    partition.rt.waiting.park(pipe, batch)
    pipe.hincrby(partition.keys.stats("gravity"), "waiting", 1)
    pipe.execute()
    return batch


def test_a_due_waiting_batch_is_sent_with_its_attempts(partition):
    park(partition, due_in=0.0, attempts=2)
    partition.transport.answer(Reply(503))

    report = partition.drain()

    assert report.stopped == "backing_off" and [ids(r) for r in partition.transport.requests] == [["w-1"]]
    [batch] = partition.waiting()
    assert batch["attempts"] == "3" and batch["due"] == at(partition.clock.now + 40.0 * 0.5)
    assert partition.stats()["waiting"] == 1


def test_a_waiting_batch_not_due_is_left_alone(partition):
    park(partition, due_in=600.0, attempts=2)

    assert partition.drain().stopped == "idle"

    assert partition.transport.requests == []


def test_while_the_destination_is_down_the_soonest_batch_is_the_probe(partition):
    park(partition, due_in=600.0, attempts=2)
    partition.redis.hset(partition.keys.breaker("gravity"), mapping={"failures": 3, "since": partition.clock.now})
    partition.transport.default = all_ok

    report = partition.drain()

    assert report.stopped == "idle" and [ids(r) for r in partition.transport.requests] == [["w-1"]]
    assert partition.waiting() == [] and partition.stats()["waiting"] == 0
    assert partition.redis.exists(partition.keys.breaker("gravity")) == 0  # the probe closed it
