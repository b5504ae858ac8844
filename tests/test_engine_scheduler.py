"""Which partitions the scheduler starts a drain for, tick by tick, on a fake clock.

The scheduler (:class:`~conversion_relay.engine.scheduler.Scheduler`) runs against a private
Redis with a recording ``start_drain`` instead of Celery.  A tick holds the tick key for most of
``tick_seconds``; a test that ticks again at once deletes it, as the passing of a tick would.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from conversion_relay.engine.scheduler import HOUSEKEEPING_SECONDS, UNREACHABLE_LOG_SECONDS, Scheduler
from conversion_relay.store.keys import GROUP, Keys
from conversion_relay.store.waiting import WaitingBatch, WaitingBatches
from tests.conftest import DATA_DB
from tests.fakes import FakeClock, engine_settings, gravity_table
from tests.support import RedisServer

EVENT = {"c": b'{"event_name":"Lead","event_id":"l-1"}'}


class Ticks:
    """A scheduler with a recording ``start_drain``, and the Redis it looks at."""

    def __init__(self, redis_url: str, tables: dict[str, dict[str, Any]], **relay: Any) -> None:
        self.settings = engine_settings(redis_url, tables, **relay)
        self.started: list[tuple[str, str, int]] = []
        self.fail_with: BaseException | None = None
        self.scheduler = Scheduler(self.settings, self.start_drain, clock=self._clock)
        self.redis = self.scheduler.redis
        self.keys = Keys(self.settings.key_prefix)
        self.clock = FakeClock.at_redis_time(self.redis)

    def _clock(self) -> float:
        return self.clock()

    def start_drain(self, destination: str, token: str, partition: int) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.started.append((destination, token, partition))

    def tick(self) -> list[tuple[str, int]]:
        """One tick as if the last one's key had run out; the (destination, partition) pairs started."""
        self.redis.delete(self.keys.tick)
        before = len(self.started)
        self.scheduler.run_once()
        return [(name, k) for name, _, k in self.started[before:]]

    def add(self, destination: str = "gravity", partition: int = 0) -> None:
        self.redis.xadd(self.keys.stream(destination, partition), EVENT)

    def park(self, destination: str = "gravity", due_in: float = 0.0) -> None:
        now = self.clock.now
        batch = WaitingBatch(destination, "", ['{"event_id":"w"}'], 1, now - 5, now - 5, now + due_in)
        pipe = self.redis.pipeline()
        WaitingBatches(self.redis, self.keys).park(pipe, batch)
        pipe.execute()

    def close(self) -> None:
        self.redis.close()


@pytest.fixture
def make_ticks(redis_server: RedisServer, data: Any) -> Iterator[Any]:
    built: list[Ticks] = []

    def build(tables: dict[str, dict[str, Any]] | None = None, redis_url: str | None = None, **relay: Any) -> Ticks:
        ticks = Ticks(redis_url or redis_server.url(DATA_DB), tables or {"gravity": gravity_table()}, **relay)
        built.append(ticks)
        return ticks

    yield build
    for ticks in built:
        ticks.close()


@pytest.fixture
def ticks(make_ticks: Any) -> Ticks:
    return make_ticks()


def test_no_work_starts_nothing(ticks):
    assert ticks.tick() == []
    assert ticks.redis.exists(ticks.keys.lease("gravity", 0)) == 0


def test_unread_entries_start_a_drain_holding_the_partitions_lease(ticks):
    ticks.add()

    assert ticks.tick() == [("gravity", 0)]

    [(_, token, _)] = ticks.started
    assert ticks.redis.get(ticks.keys.lease("gravity", 0)) == token.encode()
    assert ticks.tick() == []  # the partition has an owner now


def test_a_partition_whose_lease_is_held_is_left_to_its_owner(ticks):
    ticks.add()
    ticks.redis.set(ticks.keys.lease("gravity", 0), "a-running-drain")

    assert ticks.tick() == []


def test_entries_an_earlier_drain_left_pending_start_a_drain(ticks):
    ticks.add()
    stream = ticks.keys.stream("gravity", 0)
    ticks.redis.xgroup_create(stream, GROUP, id="0")
    ticks.redis.xreadgroup(GROUP, "0:a-drain-that-died", {stream: ">"})  # none unread, one pending

    assert ticks.tick() == [("gravity", 0)]


def test_a_destination_backing_off_gets_no_drain(ticks):
    ticks.add()
    ticks.redis.set(ticks.keys.pause("gravity"), repr(ticks.clock.now + 30), px=30_000)

    assert ticks.tick() == []

    ticks.redis.delete(ticks.keys.pause("gravity"))  # the pause ran out
    assert ticks.tick() == [("gravity", 0)]


def test_only_the_destinations_with_work_get_drains(make_ticks):
    ticks = make_ticks({"gravity": gravity_table(), "other": gravity_table()})
    ticks.add("other")

    assert ticks.tick() == [("other", 0)]


def test_each_partition_with_work_gets_a_drain_of_its_own(make_ticks):
    ticks = make_ticks({"gravity": gravity_table(parallel_drains=3)})
    ticks.add(partition=0)
    ticks.add(partition=2)

    assert sorted(ticks.tick()) == [("gravity", 0), ("gravity", 2)]


def test_due_waiting_batches_get_one_drain_each_up_to_one_per_partition(make_ticks):
    ticks = make_ticks({"gravity": gravity_table(parallel_drains=3)})
    ticks.park(due_in=-1.0)
    ticks.park(due_in=0.0)
    ticks.park(due_in=60.0)  # not due

    assert sorted(ticks.tick()) == [("gravity", 0), ("gravity", 1)]


def test_a_batch_becomes_due_on_the_schedulers_clock(ticks):
    ticks.park(due_in=60.0)
    assert ticks.tick() == []

    ticks.clock.advance(60.0)

    assert ticks.tick() == [("gravity", 0)]


def test_while_the_destination_is_down_partition_0_gets_a_drain_for_the_probe(make_ticks):
    ticks = make_ticks({"gravity": gravity_table(parallel_drains=2)})
    ticks.park(due_in=600.0)
    ticks.redis.hset(ticks.keys.breaker("gravity"), "failures", 2)
    assert ticks.tick() == []  # two failures: not down yet, the batch keeps its schedule

    ticks.redis.hset(ticks.keys.breaker("gravity"), "failures", 3)

    assert ticks.tick() == [("gravity", 0)]


def test_partitions_left_after_parallel_drains_was_lowered_are_drained(ticks, caplog):
    ticks.add(partition=2)  # stored while the destination had three partitions

    with caplog.at_level(logging.WARNING, "conversion_relay.scheduler"):
        assert ticks.tick() == []  # the first tick's housekeeping finds the partition

    assert "draining partitions [2] left from an earlier parallel_drains" in caplog.text
    assert ticks.tick() == [("gravity", 2)]


def test_leftover_partitions_are_looked_for_once_per_housekeeping_interval(ticks):
    assert ticks.tick() == []
    ticks.add(partition=1)

    ticks.clock.advance(HOUSEKEEPING_SECONDS - 1)
    ticks.tick()
    assert ticks.tick() == []

    ticks.clock.advance(1)
    ticks.tick()
    assert ticks.tick() == [("gravity", 1)]


def test_another_workers_tick_means_this_one_looks_no_further(ticks):
    ticks.add()
    other = Scheduler(ticks.settings, ticks.start_drain, clock=ticks._clock)
    try:
        ticks.redis.delete(ticks.keys.tick)
        assert other.run_once() == ["gravity"]

        ticks.redis.delete(ticks.keys.lease("gravity", 0))  # so only the tick key holds it back
        assert ticks.scheduler.run_once() == []
    finally:
        other.redis.close()
    assert len(ticks.started) == 1


def test_a_drain_that_cannot_be_sent_gives_the_lease_back(ticks, caplog):
    ticks.add()
    ticks.fail_with = OperationalError("broker refused the connection")

    assert ticks.tick() == []

    assert ticks.redis.exists(ticks.keys.lease("gravity", 0)) == 0
    assert "out of reach" in caplog.text
    ticks.fail_with = None
    assert ticks.tick() == [("gravity", 0)]


def test_redis_out_of_reach_is_said_once_per_interval_and_its_return_once(make_ticks, caplog):
    own = RedisServer()
    try:
        ticks = make_ticks(redis_url=own.url(0))
        ticks.add()
        assert ticks.tick() == [("gravity", 0)]
        own.kill()

        with caplog.at_level(logging.WARNING, "conversion_relay.scheduler"):
            for _ in range(3):
                assert ticks.scheduler.run_once() == []
                ticks.clock.advance(UNREACHABLE_LOG_SECONDS / 3 - 0.1)
            assert caplog.text.count("Redis is out of reach (ConnectionError)") == 1

            ticks.clock.advance(1.0)
            assert ticks.scheduler.run_once() == []
            assert caplog.text.count("Redis is out of reach") == 2

            own.start()  # empty again: nothing kept
            ticks.add()
            assert ticks.tick() == [("gravity", 0)]
            assert caplog.text.count("Redis is reachable again; scheduling resumed") == 1
            ticks.add()
            ticks.redis.delete(ticks.keys.lease("gravity", 0))
            assert ticks.tick() == [("gravity", 0)]
            assert caplog.text.count("reachable again") == 1
    finally:
        own.stop()


def test_every_drain_gets_a_token_of_its_own(make_ticks):
    ticks = make_ticks({"gravity": gravity_table(parallel_drains=2)})
    ticks.add(partition=0)
    ticks.add(partition=1)

    ticks.tick()

    tokens = [token for _, token, _ in ticks.started]
    assert len(set(tokens)) == 2 and all(uuid.UUID(hex=t) for t in tokens)
