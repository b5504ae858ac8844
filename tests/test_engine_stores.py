"""The engine's Redis stores on their own: waiting batches, the drain's lease, the rate limit.

Times the stores take as arguments come from a fake clock; the lease's watchdog runs on an
injected monotonic clock.  Redis is a private server, the only real clock here is Redis's own
(the rate limit and key expiries), which the tests keep to fractions of a second.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conversion_relay.errors import LeaseLost
from conversion_relay.store.keys import GROUP, Keys
from conversion_relay.store.lease import INFLIGHT_MARGIN_SECONDS, DrainLease, Leases, consumer_name
from conversion_relay.store.ratelimit import WINDOW_SECONDS, RateLimiter
from conversion_relay.store.waiting import WaitingBatch, WaitingBatches
from tests.fakes import FakeClock
from tests.support import wait_for

KEYS = Keys("cr")
NAME = "gravity"


@pytest.fixture
def leased(data: redis.Redis) -> tuple[str, str, int]:
    """Partition 0's lease, held by a drain: (key, token, ttl ms) as claims take it."""
    token = uuid.uuid4().hex
    data.set(KEYS.lease(NAME, 0), token, px=5000)
    return KEYS.lease(NAME, 0), token, 5000


def park(data: redis.Redis, due: float, claimed_until: float | None = None) -> WaitingBatch:
    batch = WaitingBatch(NAME, "", ['{"event_id":"w"}'], 1, due - 10, due - 10, due)
    pipe = data.pipeline()
    WaitingBatches(data, KEYS).park(pipe, batch)
    if claimed_until is not None:
        pipe.hset(KEYS.batch(NAME, batch.id), "claimed_until", claimed_until)
    pipe.execute()
    return batch


def score(data: redis.Redis, batch: WaitingBatch) -> float:
    return float(data.zscore(KEYS.retry(NAME), batch.id))


# Waiting batches.


def test_claims_take_the_most_overdue_batch_first_and_each_once(data, leased):
    clock = FakeClock(1_800_000_000.0)
    waiting = WaitingBatches(data, KEYS)
    later = park(data, clock.now - 1)
    first = park(data, clock.now - 10)
    park(data, clock.now + 60)  # not due

    assert waiting.claim(NAME, leased, clock.now, 30.0).id == first.id
    assert waiting.claim(NAME, leased, clock.now, 30.0).id == later.id
    assert waiting.claim(NAME, leased, clock.now, 30.0) is None
    # Claimed until the end of the coming request: re-scored there, so a dead drain's batch returns.
    assert score(data, first) == clock.now + 30.0
    assert float(data.hget(KEYS.batch(NAME, first.id), "claimed_until")) == clock.now + 30.0


def test_a_claimed_batch_is_due_again_once_its_claim_ran_out(data, leased):
    clock = FakeClock(1_800_000_000.0)
    waiting = WaitingBatches(data, KEYS)
    batch = park(data, clock.now)
    waiting.claim(NAME, leased, clock.now, 30.0)

    clock.advance(29.0)
    assert waiting.claim(NAME, leased, clock.now, 30.0) is None
    clock.advance(1.0)
    assert waiting.claim(NAME, leased, clock.now, 30.0).id == batch.id


def test_a_probe_claims_the_soonest_batch_even_before_it_is_due(data, leased):
    clock = FakeClock(1_800_000_000.0)
    park(data, clock.now + 600)
    soonest = park(data, clock.now + 60)

    assert WaitingBatches(data, KEYS).claim(NAME, leased, clock.now, 30.0) is None
    assert WaitingBatches(data, KEYS).claim(NAME, leased, clock.now, 30.0, probe=True).id == soonest.id


def test_a_probe_never_takes_a_batch_another_drain_is_sending(data, leased):
    now = 1_800_000_000.0
    waiting = WaitingBatches(data, KEYS)
    park(data, now)
    assert waiting.claim(NAME, leased, now, 30.0) is not None

    assert waiting.claim(NAME, leased, now + 1, 30.0, probe=True) is None


def test_a_claim_by_a_drain_that_lost_its_lease_raises(data, leased):
    park(data, 1_800_000_000.0)
    key, _, ttl = leased

    with pytest.raises(LeaseLost):
        WaitingBatches(data, KEYS).claim(NAME, (key, "not-the-owner", ttl), 1_800_000_000.0, 30.0)


def test_an_index_entry_whose_batch_is_gone_is_dropped_by_the_claim(data, leased):
    now = 1_800_000_000.0
    gone = park(data, now - 10)
    data.delete(KEYS.batch(NAME, gone.id))
    there = park(data, now - 1)

    assert WaitingBatches(data, KEYS).claim(NAME, leased, now, 30.0).id == there.id
    assert data.zscore(KEYS.retry(NAME), gone.id) is None


def test_reschedule_all_makes_every_unclaimed_batch_due_now(data):
    now = 1_800_000_000.0
    soon, late = park(data, now + 5), park(data, now + 500)
    claimed = park(data, now + 40, claimed_until=now + 40)
    overdue = park(data, now - 3)

    assert WaitingBatches(data, KEYS).reschedule_all(NAME, now) == 2

    assert (score(data, soon), score(data, late)) == (now, now)
    assert score(data, claimed) == now + 40  # in a request right now
    assert score(data, overdue) == now - 3  # keeps its place at the front


# The drain's lease.


@pytest.fixture
def lease_of(data: redis.Redis) -> Iterator[Any]:
    made: list[DrainLease] = []

    def make(ttl: float = 5.0, clock: FakeClock | None = None) -> DrainLease:
        token = uuid.uuid4().hex
        assert Leases(data, KEYS).acquire(NAME, 0, token, ttl)
        lease = DrainLease(data, KEYS, NAME, 0, token, ttl, **({"clock": clock} if clock else {}))
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.release()


def test_the_scheduler_takes_a_free_lease_once_and_gives_back_only_its_own(data):
    leases = Leases(data, KEYS)
    assert leases.acquire(NAME, 0, "task-a", 5.0)
    assert not leases.acquire(NAME, 0, "task-b", 5.0)

    leases.release(NAME, 0, "task-b")
    assert data.get(KEYS.lease(NAME, 0)) == b"task-a"
    leases.release(NAME, 0, "task-a")
    assert data.exists(KEYS.lease(NAME, 0)) == 0


def test_a_drain_passes_the_lease_from_its_tasks_token_to_its_own_run(data, lease_of):
    lease = lease_of()

    assert lease.start()

    assert data.get(KEYS.lease(NAME, 0)) == lease.token.encode() != lease.task_token.encode()
    assert lease.consumer == consumer_name(0, lease.token)
    # The same task run again (the broker handed it out twice) finds its token gone.
    again = DrainLease(data, KEYS, NAME, 0, lease.task_token, 5.0)
    assert not again.start() and again.lost


def test_the_heartbeat_renews_the_lease_while_the_drain_makes_progress(data, lease_of):
    lease = lease_of(ttl=0.5)  # renewed every 0.1 s
    assert lease.start()

    time.sleep(0.3)

    assert data.pttl(KEYS.lease(NAME, 0)) > 350
    assert not lease.lost


def test_a_drain_that_makes_no_progress_lets_its_lease_run_out(data, lease_of, caplog):
    clock = FakeClock(1000.0)  # the watchdog's monotonic clock
    lease = lease_of(ttl=0.5, clock=clock)
    assert lease.start()
    lease.touch(1.0)

    with caplog.at_level(logging.ERROR, "conversion_relay.lease"):
        clock.advance(1.0 + 0.5 + 0.01)  # past the promised check-in and a lease more
        wait_for(lambda: not lease._thread.is_alive(), timeout=2, what="the heartbeat to stop")
        wait_for(lambda: not data.exists(KEYS.lease(NAME, 0)), timeout=2, what="the lease to run out")

    assert "drain made no progress; letting its lease run out" in caplog.text


def test_a_request_is_fenced_marked_in_flight_and_keeps_its_batch_claimed(data, lease_of):
    lease = lease_of()
    assert lease.start()
    batch = park(data, 1_800_000_000.0)
    data.set(KEYS.pause(NAME), "1800000030.0")
    data.hset(KEYS.breaker(NAME), "failures", 2)

    assert lease.begin_request(10.0, batch.id, now=1_800_000_000.0)

    window = 10.0 + INFLIGHT_MARGIN_SECONDS
    mark_ms = int(data.hget(KEYS.inflight(NAME, 0), lease.consumer))
    redis_ms = data.time()[0] * 1000
    assert redis_ms + window * 1000 - 2000 <= mark_ms <= redis_ms + window * 1000 + 1000
    assert score(data, batch) == 1_800_000_000.0 + window
    assert float(data.hget(KEYS.batch(NAME, batch.id), "claimed_until")) == 1_800_000_000.0 + window
    assert (lease.paused_until, lease.failures) == (1_800_000_030.0, 2)

    data.set(KEYS.lease(NAME, 0), "someone-else")
    assert not lease.begin_request(10.0) and lease.lost


def test_release_drops_an_empty_consumer_and_keeps_one_that_holds_entries(data, lease_of):
    stream = KEYS.stream(NAME, 0)
    data.xgroup_create(stream, GROUP, id="0", mkstream=True)
    empty = lease_of()
    assert empty.start()
    data.xreadgroup(GROUP, empty.consumer, {stream: ">"})  # nothing there: the consumer exists
    empty.release()
    assert data.exists(KEYS.lease(NAME, 0)) == 0
    assert [c["name"] for c in data.xinfo_consumers(stream, GROUP)] == []

    holding = lease_of()
    assert holding.start()
    data.xadd(stream, {"c": b"{}"})
    data.xreadgroup(GROUP, holding.consumer, {stream: ">"})
    holding.release()
    assert [c["name"] for c in data.xinfo_consumers(stream, GROUP)] == [holding.consumer.encode()]


# The rate limit (counted on Redis's clock, so that workers whose clocks differ agree).


@pytest.mark.parametrize(
    "per_second, limit, window",
    [(3, 3, WINDOW_SECONDS), (0.5, 1, 2 * WINDOW_SECONDS), (2.5, 2, WINDOW_SECONDS * 2 / 2.5), (500, 500, 1.05)],
)
def test_a_rate_is_a_count_over_a_window(data, per_second, limit, window):
    limiter = RateLimiter(data, KEYS, "k", per_second)
    assert (limiter.limit, limiter.window) == (limit, pytest.approx(window))


def test_the_limit_lets_its_count_through_then_says_how_long_to_wait(data):
    limiter = RateLimiter(data, KEYS, "k", 3)

    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]

    wait = limiter.acquire()
    assert 0 < wait <= WINDOW_SECONDS
    assert data.zcard(KEYS.rate("k")) == 3  # a refused request takes no slot
    assert 0 < data.pttl(KEYS.rate("k")) <= WINDOW_SECONDS * 1000 + 1000  # an idle limit goes away


def test_destinations_sharing_a_rate_key_share_the_limit(data):
    one, two = RateLimiter(data, KEYS, "shared", 2), RateLimiter(data, KEYS, "shared", 2)
    alone = RateLimiter(data, KEYS, "own", 2)

    assert (one.acquire(), two.acquire()) == (0.0, 0.0)

    assert one.acquire() > 0 and two.acquire() > 0
    assert alone.acquire() == 0.0


def test_no_limit_never_waits_and_writes_nothing(data):
    limiter = RateLimiter(data, KEYS, "free", 0)

    assert [limiter.acquire() for _ in range(50)] == [0.0] * 50
    assert data.exists(KEYS.rate("free")) == 0
