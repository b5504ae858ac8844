"""docs/design.md's outcome table, row by row, against the delivery engine driven directly.

Each test builds what a drain gives the engine -- the runtime (with a :class:`FakeTransport`),
the partition's stream and lease, the waiting and dead-letter stores -- on a private Redis,
enqueues real events with the producer, hands the engine a chunk of them, and checks what the
outcome left in Redis: counters, waiting batches and their due times on the fake clock, dead
letters and their reasons, acknowledged stream entries.  No Celery, no HTTP, no waiting.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conversion_relay import Relay
from conversion_relay.engine.delivery import Delivery
from conversion_relay.engine.ledger import BATCH, STREAM, Ledger
from conversion_relay.engine.runtime import Runtime
from conversion_relay.errors import LeaseLost
from conversion_relay.outcomes import Accepted, Rejected, RetryLater, TooLarge
from conversion_relay.store import backlog
from conversion_relay.store.lease import DrainLease, Leases
from conversion_relay.store.stream import PartitionStream
from conversion_relay.vendors.batching import Chunk
from tests.conftest import DATA_DB
from tests.fakes import (
    API_KEY,
    FakeClock,
    FakeTransport,
    FixedRandom,
    Reply,
    SentRequest,
    at,
    connection_refused,
    dead_letters_of,
    engine_settings,
    gravity_table,
    paused_until,
    read_timeout,
    stats_of,
    stream_of,
    tracify_table,
    waiting_of,
)

#: Numbers a due time can be worked out from: with the jitter pinned at 0.5 the first retry
#: waits 10 x 0.5 = 5 s and the destination pauses min(5, 10) x (0.5 + 0.25) = 3.75 s.
RELAY = {
    "backoff_base_seconds": 10.0,
    "backoff_cap_seconds": 600.0,
    "probe_interval_seconds": 5.0,
    "max_retry_after_seconds": 60.0,
    "retry_horizon_seconds": 3600.0,
    "lease_seconds": 5.0,
}
FIRST_RETRY = 5.0
FIRST_PAUSE = 3.75


def purchase(i: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": f"e-{i}",
        "event_source_url": "https://shop.example/thank-you",
        "user_data": {"external_id": [f"u-{i}"], "client_ip_address": "203.0.113.9", "client_user_agent": "UA/1"},
        "custom_data": {"value": 10.0, "currency": "EUR", "order_id": f"{i}"},
    }


def event_ids(request: SentRequest) -> list[str]:
    """The events a request carried (Gravity by ``event_id``, Tracify by order)."""
    document = request.json()
    if "data" in document:
        return [event["event_id"] for event in document["data"]]
    return ["e-" + event["data"]["order_id"] for event in document["events"]]


def results(*statuses: str) -> Any:
    """A Gravity answer giving part ``i`` the result ``statuses[i]`` (``error`` with a message)."""

    def answer(request: SentRequest) -> Reply:
        found = []
        for event_id, status in zip(event_ids(request), statuses, strict=True):
            result = {"event_id": event_id, "status": status}
            if status == "error":
                result["error"] = f"{event_id}: user_data is empty"
            found.append(result)
        return Reply(200, {"results": found})

    return answer


def all_ok(request: SentRequest) -> Reply:
    return results(*["ok"] * len(event_ids(request)))(request)


class Engine:
    """One drain's delivery engine on partition 0 of ``name``, built as a drain builds it."""

    def __init__(self, redis_url: str, name: str, table: dict[str, Any], **relay: Any) -> None:
        self.settings = engine_settings(redis_url, {name: table}, **{**RELAY, **relay})
        self.name = name
        self.producer = Relay(self.settings)
        self.rt = Runtime(self.settings, transport_for=self._transport)
        self.redis = self.rt.redis
        self.clock = FakeClock.at_redis_time(self.redis)
        self.rand = FixedRandom(0.5)
        self.dest = self.rt.destination(name)
        self.transport: FakeTransport = self.dest.transport  # type: ignore[assignment]
        self.stream = PartitionStream(self.redis, self.rt.keys, name, 0)
        self.stream.ensure_group()
        token = uuid.uuid4().hex
        assert Leases(self.redis, self.rt.keys).acquire(name, 0, token, self.settings.lease_seconds)
        self.lease = DrainLease(self.redis, self.rt.keys, name, 0, token, self.settings.lease_seconds)
        assert self.lease.start()
        self.ledger = Ledger()
        self.delivery = Delivery(
            self.rt,
            self.dest,
            self.stream,
            self.lease,
            self.ledger,
            clock=self.clock,
            rand=self.rand,
            sleep=self.clock.sleep,
        )

    def _transport(self, destination: Any) -> FakeTransport:
        return FakeTransport(destination, clock=self.clock)

    def enqueue(self, n: int, start: int = 0) -> list[str]:
        return self.producer.enqueue([purchase(i) for i in range(start, start + n)])

    def read_chunk(self, n: int) -> Chunk:
        """``n`` stream entries read under the drain's consumer, mapped, as one chunk."""
        entries = self.stream.read(self.lease.consumer, n)
        assert len(entries) == n
        chunk = Chunk(group="")
        for entry in entries:
            parts = self.dest.adapter.map_event(backlog.read(entry.fields).canonical_event())
            self.ledger.hold(STREAM + entry.id, len(parts))
            for part in parts:
                chunk.parts.append(part.body)
                chunk.origins.append(STREAM + entry.id)
        return chunk

    def claim_batch(self) -> Chunk:
        """The most overdue waiting batch, claimed as a drain claims it, as one chunk."""
        lease = (self.stream.lease_key, self.lease.token, self.lease.ttl_ms)
        batch = self.rt.waiting.claim(self.name, lease, self.clock(), 60.0)
        assert batch is not None, "no waiting batch is due"
        origin = BATCH + batch.id
        self.ledger.hold(origin, len(batch.parts))
        return Chunk(
            group=batch.group,
            parts=[p.encode() for p in batch.parts],
            origins=[origin] * len(batch.parts),
            attempts=batch.attempts,
            first_failure_at=batch.first_failure_at,
        )

    def stats(self) -> dict[str, int]:
        return stats_of(self.redis, self.settings, self.name)

    def letters(self) -> list[dict[str, Any]]:
        return dead_letters_of(self.redis, self.settings, self.name)

    def waiting(self) -> list[dict[str, Any]]:
        return waiting_of(self.redis, self.settings, self.name)

    def backlog(self) -> dict[str, int]:
        return stream_of(self.redis, self.settings, self.name)

    def paused_until(self) -> float | None:
        return paused_until(self.redis, self.settings, self.name)

    def breaker_failures(self) -> int:
        return int(self.redis.hget(self.rt.keys.breaker(self.name), "failures") or 0)

    def close(self) -> None:
        self.lease.release()
        self.producer.close()
        self.redis.close()


@pytest.fixture
def make_engine(redis_server: Any, data: Any) -> Iterator[Any]:
    engines: list[Engine] = []

    def build(name: str = "gravity", table: dict[str, Any] | None = None, **relay: Any) -> Engine:
        engine = Engine(redis_server.url(DATA_DB), name, table or gravity_table(), **relay)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: Any) -> Engine:
    return make_engine()


def ids_of(parts: list[dict[str, Any]]) -> list[str]:
    return [part["event_id"] for part in parts]


# accepted: counters per result; parts with ``error`` results become one dead letter.

ACCEPTED_ROWS = {
    "all ok": (["ok", "ok", "ok"], {"delivered": 3}),
    "duplicate": (["duplicate", "ok", "duplicate"], {"delivered": 1, "duplicate": 2}),
    "test_ok": (["test_ok", "test_ok", "ok"], {"delivered": 1, "test_ok": 2}),
    "skipped": (["skipped", "ok", "ok"], {"delivered": 2, "skipped": 1, "skipped:vendor_skipped": 1}),
}


@pytest.mark.parametrize("statuses, counters", ACCEPTED_ROWS.values(), ids=ACCEPTED_ROWS.keys())
def test_accepted_counts_each_result_and_releases_the_entries(engine, statuses, counters):
    engine.enqueue(3)
    engine.transport.answer(results(*statuses))

    outcome = engine.delivery.send(engine.read_chunk(3))

    assert outcome == Accepted(statuses=statuses)
    assert engine.stats() == {"accepted": 3, "requests": 1, **counters}
    assert engine.backlog() == {"length": 0, "pending": 0}  # XACKed and XDELed
    assert engine.letters() == [] and engine.waiting() == []


def test_accepted_with_per_event_errors_dead_letters_those_events_alone(engine):
    engine.enqueue(4)
    engine.transport.answer(results("ok", "error", "ok", "error"))

    engine.delivery.send(engine.read_chunk(4))

    assert engine.stats() == {
        "accepted": 4,
        "requests": 1,
        "delivered": 2,
        "dead_lettered": 2,
        "dead_lettered:vendor_rejected_event": 2,
    }
    [letter] = engine.letters()
    assert letter["reason"] == "vendor_rejected_event" and letter["status"] == "200"
    assert ids_of(letter["parts"]) == ["e-1", "e-3"]
    assert letter["errors"] == {"0": "e-1: user_data is empty", "1": "e-3: user_data is empty"}
    assert float(letter["last_failed_at"]) == engine.clock.now
    assert engine.backlog() == {"length": 0, "pending": 0}


def test_an_unknown_result_status_is_an_error_of_that_event(engine):
    engine.enqueue(2)
    engine.transport.answer(results("ok", "maybe"))

    engine.delivery.send(engine.read_chunk(2))

    [letter] = engine.letters()
    assert ids_of(letter["parts"]) == ["e-1"] and letter["errors"] == {"0": "unknown result status 'maybe'"}


# retry later: a waiting batch due after the backoff; the destination backs off until then.

RETRY_ROWS = {
    "connection error": (connection_refused(), "connection_error", "", False),
    "timeout": (read_timeout(), "timeout", "", False),
    "408": (Reply(408, b"request timeout"), "http_408", "408", True),
    "425": (Reply(425, b"too early"), "http_425", "425", True),
    "429": (Reply(429, b"slow down"), "http_429", "429", True),
    "500": (Reply(500, b"oops"), "http_500", "500", True),
    "503": (Reply(503, b"down"), "http_503", "503", True),
    "599": (Reply(599, b""), "http_599", "599", True),
    "unreadable 200": (Reply(200, b"<html>maintenance</html>"), "unreadable_response", "200", True),
}


@pytest.mark.parametrize("answer, reason, status, answered", RETRY_ROWS.values(), ids=RETRY_ROWS.keys())
def test_retry_later_parks_a_waiting_batch_due_after_the_backoff(engine, answer, reason, status, answered):
    engine.enqueue(3)
    engine.transport.answer(answer)
    now = engine.clock.now

    outcome = engine.delivery.send(engine.read_chunk(3))

    assert isinstance(outcome, RetryLater) and outcome.reason == reason
    [batch] = engine.waiting()
    assert ids_of(batch["parts"]) == ["e-0", "e-1", "e-2"]
    assert batch["due"] == at(now + FIRST_RETRY)
    assert float(batch["next_attempt_at"]) == at(now + FIRST_RETRY)
    assert batch["attempts"] == "1" and batch["last_reason"] == reason and batch["last_status"] == status
    assert float(batch["first_failure_at"]) == now
    assert engine.paused_until() == at(now + FIRST_PAUSE)
    assert engine.breaker_failures() == 1
    # A request that never got an answer is not counted as one.
    requests = {"requests": 1} if answered else {}
    assert engine.stats() == {"accepted": 3, "retried": 3, "waiting": 3, **requests}
    assert engine.backlog() == {"length": 0, "pending": 0}
    assert engine.letters() == []


RETRY_AFTER_ROWS = {
    "longer than the backoff": ("30", 30.0, 30.0),
    "shorter than the backoff: at least the backoff": ("1", FIRST_RETRY, FIRST_PAUSE),
    "past max_retry_after_seconds: capped": ("7200", 60.0, 60.0),
    "unreadable: the backoff": ("soon", FIRST_RETRY, FIRST_PAUSE),
}


@pytest.mark.parametrize("header, due_in, paused_for", RETRY_AFTER_ROWS.values(), ids=RETRY_AFTER_ROWS.keys())
def test_retry_later_waits_at_least_the_retry_after(engine, header, due_in, paused_for):
    engine.enqueue(2)
    engine.transport.answer(Reply(429, b"slow down", {"Retry-After": header}))
    now = engine.clock.now

    engine.delivery.send(engine.read_chunk(2))

    [batch] = engine.waiting()
    assert batch["due"] == at(now + due_in)
    assert engine.paused_until() == at(now + paused_for)


def test_the_pause_never_outlasts_the_batchs_own_wait(make_engine):
    engine = make_engine(backoff_base_seconds=1.0)  # waits 0.5 s; the pause alone would be 0.75 s
    engine.enqueue(1)
    now = engine.clock.now
    engine.transport.answer(Reply(503))

    engine.delivery.send(engine.read_chunk(1))

    assert engine.waiting()[0]["due"] == at(now + 0.5)
    assert engine.paused_until() == at(now + 0.5)


def test_the_backoff_grows_with_the_attempts_and_keeps_the_first_failure(engine):
    engine.enqueue(2)
    first = engine.clock.now
    engine.transport.answer(Reply(503), Reply(503), Reply(503))
    engine.delivery.send(engine.read_chunk(2))
    for attempt, window in ((2, 20.0), (3, 40.0)):
        engine.clock.now = engine.waiting()[0]["due"]
        engine.delivery.send(engine.claim_batch())
        [batch] = engine.waiting()
        assert batch["attempts"] == str(attempt)
        assert batch["due"] == at(engine.clock.now + window * 0.5)
        assert float(batch["first_failure_at"]) == first
    assert engine.stats()["waiting"] == 2 and engine.stats()["retried"] == 6
    assert engine.breaker_failures() == 3


def test_retry_later_past_the_horizon_is_dead_lettered_retries_exhausted(make_engine):
    engine = make_engine(retry_horizon_seconds=100.0)
    engine.enqueue(2)
    first = engine.clock.now
    engine.transport.answer(Reply(503, b"down"), Reply(503, b"still down"))
    engine.delivery.send(engine.read_chunk(2))
    engine.clock.advance(101.0)

    engine.delivery.send(engine.claim_batch())

    assert engine.waiting() == []
    [letter] = engine.letters()
    assert letter["reason"] == "retries_exhausted" and letter["status"] == "503"
    assert letter["excerpt"] == "http_503: still down"
    assert letter["attempts"] == "2" and float(letter["first_failed_at"]) == first
    assert ids_of(letter["parts"]) == ["e-0", "e-1"]
    stats = engine.stats()
    assert stats["dead_lettered"] == 2 and stats["waiting"] == 0


def test_a_retry_is_never_due_past_the_horizon(make_engine):
    engine = make_engine(retry_horizon_seconds=3.0)
    engine.enqueue(1)
    now = engine.clock.now
    engine.transport.answer(Reply(503))

    engine.delivery.send(engine.read_chunk(1))

    assert engine.waiting()[0]["due"] == at(now + 3.0)  # the backoff would be 5 s


def test_retry_later_past_max_attempts_is_dead_lettered_retries_exhausted(make_engine):
    engine = make_engine(max_attempts=2)
    engine.enqueue(1)
    engine.transport.answer(read_timeout(), Reply(500, b"oops"))
    engine.delivery.send(engine.read_chunk(1))
    engine.clock.now = engine.waiting()[0]["due"]

    engine.delivery.send(engine.claim_batch())

    [letter] = engine.letters()
    assert letter["reason"] == "retries_exhausted" and letter["attempts"] == "2"
    assert letter["excerpt"] == "http_500: oops"
    assert engine.waiting() == [] and len(engine.transport.requests) == 2


# too large (413): halves are sent; a single part is dead-lettered ``too_large``.


def test_too_large_splits_in_halves_and_dead_letters_a_single_part(engine):
    engine.enqueue(4)
    engine.transport.answer(Reply(413, b"too big"), all_ok, Reply(413, b"too big"), all_ok, Reply(413, b"still big"))

    outcome = engine.delivery.send(engine.read_chunk(4))

    assert isinstance(outcome, TooLarge)
    sent = [event_ids(r) for r in engine.transport.requests]
    assert sent == [["e-0", "e-1", "e-2", "e-3"], ["e-0", "e-1"], ["e-2", "e-3"], ["e-2"], ["e-3"]]
    [letter] = engine.letters()
    assert letter["reason"] == "too_large" and letter["status"] == "413" and letter["excerpt"] == "still big"
    assert ids_of(letter["parts"]) == ["e-3"]
    assert engine.stats() == {
        "accepted": 4,
        "requests": 5,
        "split": 2,
        "delivered": 3,
        "dead_lettered": 1,
        "dead_lettered:too_large": 1,
    }
    assert engine.backlog() == {"length": 0, "pending": 0}


# refused whole (400, 422) by a vendor without per-event results: split until the refused
# event is alone and dead-lettered; its neighbours are delivered.


@pytest.mark.parametrize("status", [400, 422])
def test_refused_whole_by_tracify_isolates_the_refused_event(make_engine, status):
    engine = make_engine("tracify", tracify_table())
    engine.enqueue(5)

    def refuse_e3(request: SentRequest) -> Reply:
        if "e-3" in event_ids(request):
            return Reply(status, b'{"status": false, "message": "bad event"}')
        return Reply(200, {"status": True})

    engine.transport.default = refuse_e3

    outcome = engine.delivery.send(engine.read_chunk(5))

    assert isinstance(outcome, Rejected) and outcome.status == status
    [letter] = engine.letters()
    assert letter["reason"] == f"http_{status}" and letter["status"] == str(status)
    assert ["e-" + p["data"]["order_id"] for p in letter["parts"]] == ["e-3"]
    stats = engine.stats()
    assert stats["delivered"] == 4 and stats["dead_lettered"] == 1
    # 5 -> 2 + 3 -> 3 = 1 + 2 -> 2 = 1 + 1: three splits, seven requests.
    assert stats["split"] == 3 and stats["requests"] == len(engine.transport.requests) == 7
    assert engine.backlog() == {"length": 0, "pending": 0}


def test_a_400_from_a_vendor_with_per_event_results_is_not_split(engine):
    engine.enqueue(3)
    engine.transport.answer(Reply(400, b'{"error": "bad request"}'))

    engine.delivery.send(engine.read_chunk(3))

    assert len(engine.transport.requests) == 1
    [letter] = engine.letters()
    assert letter["reason"] == "http_400" and ids_of(letter["parts"]) == ["e-0", "e-1", "e-2"]


# rejected (other 4xx): a dead letter ``http_<status>`` with a response excerpt.


@pytest.mark.parametrize("status", [401, 403, 404, 409, 410, 451])
def test_rejected_is_dead_lettered_with_the_status_and_an_excerpt(engine, status):
    engine.enqueue(2)
    # Vendors echo what they were sent: the key must not reach the dead letter.
    engine.transport.answer(Reply(status, f'{{"error": "refused", "key": "{API_KEY}"}}'.encode()))

    outcome = engine.delivery.send(engine.read_chunk(2))

    assert isinstance(outcome, Rejected)
    [letter] = engine.letters()
    assert letter["reason"] == f"http_{status}" and letter["status"] == str(status)
    assert letter["excerpt"].startswith('{"error": "refused"') and API_KEY not in letter["excerpt"]
    assert letter["attempts"] == "1" and ids_of(letter["parts"]) == ["e-0", "e-1"]
    assert engine.stats() == {"accepted": 2, "requests": 1, "dead_lettered": 2, f"dead_lettered:http_{status}": 2}
    assert engine.waiting() == [] and engine.paused_until() is None and engine.breaker_failures() == 0
    assert engine.backlog() == {"length": 0, "pending": 0}


# Never sent: a part too large, or parts the engine holds back (budget, back-off).


def test_dead_letter_without_a_request_releases_the_entry(engine):
    engine.enqueue(1)
    chunk = engine.read_chunk(1)

    engine.delivery.dead_letter(chunk, "too_large", "one event is over the 10-byte request limit")

    assert engine.transport.requests == []
    [letter] = engine.letters()
    assert letter["reason"] == "too_large" and letter["status"] == "" and letter["attempts"] == "1"
    assert engine.stats() == {"accepted": 1, "dead_lettered": 1, "dead_lettered:too_large": 1}
    assert engine.backlog() == {"length": 0, "pending": 0}


def test_past_the_budget_no_request_leaves_and_the_chunk_waits_due_at_once(engine):
    engine.enqueue(2)
    engine.delivery.budget_end = engine.clock.now

    assert engine.delivery.send(engine.read_chunk(2)) is None

    assert engine.transport.requests == []
    [batch] = engine.waiting()
    assert batch["due"] == engine.clock.now and batch["attempts"] == "0"
    assert engine.stats() == {"accepted": 2, "deferred": 2, "waiting": 2}
    assert engine.backlog() == {"length": 0, "pending": 0}


def test_while_the_destination_backs_off_a_chunk_waits_for_the_end_of_the_pause(engine):
    engine.enqueue(3)
    engine.transport.answer(Reply(503))
    engine.delivery.send(engine.read_chunk(1))
    paused = engine.paused_until()

    assert engine.delivery.send(engine.read_chunk(2)) is None

    assert len(engine.transport.requests) == 1
    deferred = [b for b in engine.waiting() if b["attempts"] == "0"]
    assert len(deferred) == 1 and deferred[0]["due"] == at(paused)
    assert engine.stats()["deferred"] == 2


def test_a_pause_another_drain_set_holds_the_request_back(engine):
    """The lease's look at Redis (before each request) sees a pause set by another partition."""
    engine.enqueue(1)
    until = engine.clock.now + 30.0
    engine.redis.set(engine.rt.keys.pause("gravity"), repr(until), px=30_000)

    assert engine.delivery.send(engine.read_chunk(1)) is None

    assert engine.transport.requests == []
    assert engine.waiting()[0]["due"] == until


# Breaker: a lone failure leaves the other schedules alone; the first answer after a run of
# failures closes the breaker and makes every waiting batch due at once.


def test_a_lone_failure_leaves_the_other_batches_schedules_alone(engine):
    engine.enqueue(2)
    engine.transport.answer(Reply(503), all_ok)
    engine.delivery.send(engine.read_chunk(1))
    due = engine.waiting()[0]["due"]
    engine.clock.now = engine.paused_until() + 0.01

    engine.delivery.send(engine.read_chunk(1))

    assert engine.breaker_failures() == 0 and engine.paused_until() is None
    assert engine.waiting()[0]["due"] == due


def test_the_first_answer_after_a_run_of_failures_makes_every_batch_due(engine):
    engine.enqueue(4)
    engine.transport.answer(Reply(503), Reply(503), Reply(503), all_ok)
    for _ in range(3):
        engine.delivery.send(engine.read_chunk(1))
        engine.clock.now = engine.paused_until() + 0.01
    assert engine.breaker_failures() == 3
    later = [b["id"] for b in engine.waiting() if b["due"] > engine.clock.now]
    assert later  # batches whose own backoff has not ended yet

    engine.delivery.send(engine.read_chunk(1))

    assert engine.breaker_failures() == 0 and engine.paused_until() is None
    assert all(b["due"] <= engine.clock.now for b in engine.waiting())
    assert [b["due"] for b in engine.waiting() if b["id"] in later] == [engine.clock.now] * len(later)
    assert engine.delivery.paused_until is None


def test_the_pause_grows_with_the_run_but_never_past_the_probe_interval(make_engine):
    engine = make_engine(backoff_base_seconds=1.0)
    engine.rand.value = 1.0  # every wait its full length
    engine.enqueue(1)
    engine.transport.answer(*[Reply(503)] * 6)
    engine.delivery.send(engine.read_chunk(1))
    pauses = [engine.paused_until() - engine.clock.now]
    for _ in range(5):
        engine.clock.now = engine.waiting()[0]["due"]
        engine.delivery.send(engine.claim_batch())
        pauses.append(engine.paused_until() - engine.clock.now)
    # min(probe interval 5, 1 x 2^(run - 1)); the batch's own backoff (1, 2, 4, 8, ...) is longer
    assert pauses == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0, 5.0])
    assert engine.breaker_failures() == 6 and engine.waiting()[0]["attempts"] == "6"


# Lease lost: a drain that lost its partition neither sends nor acknowledges.


def test_lease_lost_before_a_request_sends_and_writes_nothing(engine):
    engine.enqueue(2)
    chunk = engine.read_chunk(2)
    engine.redis.set(engine.rt.keys.lease("gravity", 0), "another-drain")

    with pytest.raises(LeaseLost):
        engine.delivery.send(chunk)

    assert engine.transport.requests == []
    assert engine.stats() == {"accepted": 2}
    assert engine.backlog() == {"length": 2, "pending": 2}


def test_lease_lost_during_a_request_records_nothing(engine):
    engine.enqueue(2)
    chunk = engine.read_chunk(2)

    def taken_meanwhile(request: SentRequest) -> Reply:
        engine.redis.set(engine.rt.keys.lease("gravity", 0), "another-drain")
        return all_ok(request)

    engine.transport.answer(taken_meanwhile)

    with pytest.raises(LeaseLost):
        engine.delivery.send(chunk)

    assert len(engine.transport.requests) == 1
    assert engine.stats() == {"accepted": 2}
    assert engine.backlog() == {"length": 2, "pending": 2}


class Crash(BaseException):
    """The worker dies between the request and the transaction that records its outcome."""


def test_a_crash_between_request_and_outcome_leaves_the_entries_where_they_were(engine):
    engine.enqueue(2)
    engine.transport.answer(Crash())

    with pytest.raises(Crash):
        engine.delivery.send(engine.read_chunk(2))

    assert engine.stats() == {"accepted": 2}
    assert engine.backlog() == {"length": 2, "pending": 2}
    assert engine.waiting() == [] and engine.letters() == []


# Fencing and transport: what leaves for the vendor.


def test_each_request_is_marked_in_flight_for_its_timeout_and_a_margin(engine):
    engine.enqueue(1)
    marks: list[int] = []

    def look(request: SentRequest) -> Reply:
        redis_ms = int(engine.redis.time()[0]) * 1000
        mark = int(engine.redis.hget(engine.rt.keys.inflight("gravity", 0), engine.lease.consumer))
        marks.append(mark - redis_ms)
        return all_ok(request)

    engine.transport.answer(look)
    engine.delivery.send(engine.read_chunk(1))

    window_ms = (engine.dest.settings.request_timeout_seconds + 1.0) * 1000
    assert window_ms - 1000 <= marks[0] <= window_ms + 1000
    # The outcome's transaction removes the mark: a new owner need not wait for it.
    assert engine.redis.hget(engine.rt.keys.inflight("gravity", 0), engine.lease.consumer) is None
    [request] = engine.transport.requests
    assert request.allow_redirects is False
    assert request.timeout_seconds == engine.dest.settings.request_timeout_seconds
    assert request.headers["Authorization"] == f"Bearer {API_KEY}" and API_KEY not in request.url


def test_a_rate_limited_destination_waits_for_its_window_with_the_injected_sleep(make_engine):
    # 1.99 a second: one request per 1.05 / 1.99 s, the shortest window a limit can have.
    engine = make_engine(table=gravity_table(rate_limit_per_second=1.99))
    window = engine.dest.limiter.window
    engine.enqueue(2)
    engine.transport.default = all_ok
    waited: list[float] = []

    def sleep(seconds: float) -> None:  # the limiter counts on Redis's clock, which must move
        waited.append(seconds)
        engine.clock.sleep(seconds)
        time.sleep(seconds)

    engine.delivery.sleep = sleep
    engine.delivery.send(engine.read_chunk(1))
    assert waited == []

    engine.delivery.send(engine.read_chunk(1))

    assert waited and all(0 < w <= 1.0 for w in waited) and sum(waited) <= window
    first, second = engine.transport.requests
    assert second.at - first.at == pytest.approx(sum(waited))
    assert engine.stats()["delivered"] == 2
