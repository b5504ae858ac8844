"""Memory is guarded, and a full Redis heals by itself.

* a Redis whose ``maxmemory-policy`` can evict is refused at start-up (naming the setting),
  unless ``relay.allow_evicting_redis`` accepts the loss;
* ``max_backlog_events`` makes ``enqueue`` refuse one full destination (``BacklogFullError``
  naming it) while the others keep accepting;
* with ``noeviction``, a Redis filled by a dead vendor's backlog still records the outcomes of
  answered requests (nothing is sent twice), leases keep moving, and once the vendor is back
  everything is delivered and ``enqueue`` accepts again -- without an operator;
* the outcome and lease scripts succeed against a Redis at ``maxmemory``.

Three tests are strict ``xfail`` for engine bugs found while writing them (each marker's reason
says which); they pass once the bug is fixed, and then the marker must go.

Every Redis here is private to the test (:mod:`tests.redis_servers`); the healthy vendor is the
session sandbox, the failing one a sandbox of its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conversion_relay import Relay
from conversion_relay.config.settings import settings_from_document
from conversion_relay.embedded import EmbeddedRedis
from conversion_relay.errors import BacklogFullError, ConfigurationError, EnqueueError
from conversion_relay.sandbox import GravityCapiSandbox, SandboxServer
from conversion_relay.store.keys import GROUP, Keys
from conversion_relay.store.lease import DrainLease, Leases, consumer_name
from conversion_relay.store.memory import MemoryGuard
from tests.conftest import FAST_RELAY, Stack, destination, gravity_destination
from tests.support import fill_to_oom, wait_for

LRU = ("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru")


@pytest.fixture
def flagged_redis() -> Iterator[Any]:
    """A factory: ``flagged_redis("--maxmemory", "10mb")``; every server is stopped afterwards."""
    servers: list[EmbeddedRedis] = []

    def start(*extra: str) -> EmbeddedRedis:
        servers.append(EmbeddedRedis(databases=4, extra=extra))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def down() -> Iterator[GravityCapiSandbox]:
    """A second Gravity CAPI sandbox (its own server), for the vendor that goes down."""
    vendor = GravityCapiSandbox()
    server = SandboxServer({"gravity-capi": vendor}).start()
    vendor.base_url = server.url_for("gravity-capi")
    yield vendor
    vendor.configure(fail_all_status=None)
    wait_for(lambda: vendor.in_flight == 0, timeout=15, what="the down sandbox to finish its requests")
    server.stop()


def event(tag: str, i: int, pad: int = 0) -> dict[str, Any]:
    contents = [{"id": f"SKU-{n}-{'x' * pad}", "quantity": 1, "item_price": 1.0} for n in range(3 if pad else 1)]
    return {
        "event_name": "Purchase",
        "event_id": f"{tag}-{i}",
        "user_data": {"em": [f"{tag}{i}@example.com"], "external_id": [f"u-{i}"]},
        "custom_data": {"value": 3.0, "currency": "EUR", "order_id": f"{i}", "contents": contents},
    }


def ids_at(vendor: GravityCapiSandbox) -> list[str]:
    with vendor._lock:
        return [e["event_id"] for e in vendor.events]


def make(server: Any, directory: Path, relay: dict[str, Any], destinations: dict[str, Any], **env: str) -> Stack:
    directory.mkdir()
    return Stack(server, directory, {**FAST_RELAY, **relay}, destinations, extra_env=env)


# --- 1. eviction policy -------------------------------------------------------------------------


def test_memory_guard_names_an_evicting_policy_and_accepts_noeviction_or_the_override(flagged_redis):
    server = flagged_redis(*LRU)
    client = redis.Redis.from_url(server.url(1))

    def guard(**relay: Any) -> MemoryGuard:
        table = {"vendor": "gravity_capi", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}
        document = {"relay": relay, "destinations": {"g": table}}
        settings = settings_from_document(document, {"REDIS_URL": server.url(1), "K": "key"})
        return MemoryGuard(client, settings)

    refusing = guard()
    with pytest.raises(ConfigurationError) as refused:
        refusing.check_policy()
    message = str(refused.value)
    assert "maxmemory-policy allkeys-lru" in message
    assert "noeviction" in message and "allow_evicting_redis" in message
    guard(allow_evicting_redis=True).check_policy()  # the documented override
    client.config_set("maxmemory-policy", "noeviction")
    guard().check_policy()
    client.close()


def test_a_worker_refuses_an_evicting_redis_unless_told_to_accept_it(flagged_redis, sandbox, gravity, tmp_path):
    server = flagged_redis(*LRU)
    destinations = {"gravity": gravity_destination(sandbox)}
    refused = make(server, tmp_path / "refused", {}, destinations)
    try:
        with pytest.raises(RuntimeError) as failed:
            refused.start_worker()
        output = str(failed.value)
        assert "maxmemory-policy allkeys-lru" in output, output
        assert "noeviction" in output and "allow_evicting_redis" in output, output
    finally:
        refused.close()

    accepted = make(server, tmp_path / "accepted", {"allow_evicting_redis": True}, destinations)
    try:
        accepted.start_worker()
        accepted.relay.enqueue(event("lru", 1))
        wait_for(lambda: ids_at(gravity) == ["lru-1"], what="the event at the sandbox")
    finally:
        accepted.close()


# --- 2. per-destination backlog cap -------------------------------------------------------------


def test_a_full_destination_is_refused_alone_and_accepts_again_once_drained(make_stack, sandbox, gravity, down):
    cap = 50
    down.configure(fail_all_status=503)
    stack = make_stack(
        destinations={
            "gravity": gravity_destination(sandbox),
            "down": destination("gravity_capi", down.base_url, max_backlog_events=cap),
        }
    )
    stack.start_worker(concurrency=3)
    both: list[str] = []  # stored for both destinations
    gravity_only: list[str] = []  # refused for `down`, stored for `gravity`
    refusals: list[BacklogFullError] = []
    i = 0
    deadline = time.monotonic() + 30
    while len(refusals) < 5:
        assert time.monotonic() < deadline, f"never refused: {stack.admin.status()['down']['backlog']}"
        ev = event("cap", i)
        i += 1
        try:
            both += stack.relay.enqueue(ev)
        except BacklogFullError as exc:
            refusals.append(exc)
            gravity_only += exc.event_ids
    for exc in refusals:
        assert set(exc.full) == {"down"} and exc.full["down"] >= cap - 1, exc.full
        assert exc.stored_in == ("gravity",)
        assert "down" in str(exc) and "max_backlog_events" in str(exc) and "gravity" not in exc.full
    assert len(both) >= cap
    # The healthy destination accepts and delivers everything, the full one's refusals included.
    gravity_only += stack.relay.enqueue([event("cap-g", n) for n in range(20)], destinations=["gravity"])
    wait_for(lambda: set(ids_at(gravity)) == set(both + gravity_only), timeout=30, what="every event at gravity")
    assert gravity.counters["duplicate"] == 0

    down.configure(fail_all_status=None)
    wait_for(lambda: set(ids_at(down)) >= set(both), timeout=45, what="the backlog at the recovered vendor")
    stack.wait_settled("down", timeout=30)
    again = stack.relay.enqueue(event("cap-again", 0))
    wait_for(lambda: set(ids_at(down)) >= set(both + again), timeout=30, what="the new event at the vendor")
    assert not set(ids_at(down)) & set(gravity_only), "an event refused for `down` reached it"


def test_the_cap_bounds_a_down_destination_whose_events_move_into_waiting_batches(make_stack, sandbox, down):
    """While the vendor is down its drain reads events and parks them as waiting batches: those
    are the destination's backlog too, or the cap bounds nothing while the vendor is down."""
    cap = 50
    down.configure(fail_all_status=503)
    # As in production: a batch's backoff grows past the destination's probe interval.
    relay = {"backoff_base_seconds": 1.0, "backoff_cap_seconds": 60.0, "probe_interval_seconds": 0.2}
    stack = make_stack(relay, {"down": destination("gravity_capi", down.base_url, max_backlog_events=cap)})
    stack.start_worker(concurrency=2)
    stored, i = 0, 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and stored <= 4 * cap:
        try:
            stored += len(stack.relay.enqueue(event("bound", i)))
        except BacklogFullError:
            time.sleep(0.02)
        i += 1
    status = stack.admin.status()["down"]
    assert down.counters["ok"] == 0, "the vendor was down, nothing can have left"
    assert stored <= 2 * cap, (
        f"{stored} events accepted with max_backlog_events {cap}: {status['backlog']} in the stream, "
        f"the rest in {status['waiting_batches']} waiting batches"
    )


# --- 3. a full Redis heals by itself ------------------------------------------------------------


SHARED_BROKER_AT_MAXMEMORY = pytest.param(0.9, True, False, id="at-maxmemory-shared-broker")


@pytest.mark.parametrize(
    ("high_water", "at_maxmemory", "own_broker"),
    [
        pytest.param(0.5, False, False, id="high-water"),
        SHARED_BROKER_AT_MAXMEMORY,
        pytest.param(0.9, True, True, id="at-maxmemory-own-broker"),
    ],
)
def test_a_full_redis_records_outcomes_keeps_moving_and_heals_when_the_vendor_returns(
    flagged_redis, sandbox, gravity, down, tmp_path, high_water, at_maxmemory, own_broker
):
    """high-water: the flag stops the producer before Redis is full (the watch runs once a
    second; the fill is slowed and the mark lowered so that it is seen in time).  at-maxmemory:
    the producer outran the watch and Redis reached its limit -- as it does here at full speed,
    and in production whenever a fill is faster than ``1 - memory_high_water`` of maxmemory a
    second; it is pinned there (CONFIG SET maxmemory) so that the healthy destination's acks alone
    cannot bring it back below, and only the recovered vendor's deliveries can."""
    server = flagged_redis("--maxmemory", "12mb", "--maxmemory-policy", "noeviction")
    down.configure(fail_all_status=503)
    gravity.configure(latency_seconds=0.1)  # requests are in flight while Redis fills
    destinations = {
        "gravity": gravity_destination(sandbox, max_events=200),
        "down": destination("gravity_capi", down.base_url),
    }
    env = {"CONVERSION_RELAY_BROKER_URL": flagged_redis().url(0)} if own_broker else {}
    stack = make(server, tmp_path / "full", {"memory_high_water": high_water}, destinations, **env)
    try:
        worker = stack.start_worker(concurrency=3)

        def alive(predicate: Any) -> Any:
            return lambda: worker.proc.poll() is not None or predicate()

        def assert_alive() -> None:
            output = worker.output()
            assert worker.proc.poll() is None and "Unrecoverable error" not in output, output[-5000:]

        held: list[str] = []  # for the down vendor: these fill Redis
        healthy: list[str] = []  # for gravity, in flight while Redis fills
        refused: EnqueueError | None = None
        i = 0
        deadline = time.monotonic() + 60
        while refused is None:
            assert time.monotonic() < deadline, "Redis never filled up"
            i += 1
            try:
                held += stack.relay.enqueue([event(f"held{i}", n, pad=40) for n in range(200)], destinations=["down"])
                healthy += stack.relay.enqueue([event(f"ok{i}", n) for n in range(20)], destinations=["gravity"])
            except EnqueueError as exc:
                assert not exc.maybe_stored, exc
                refused = exc
            if not at_maxmemory:
                time.sleep(0.1)  # slow enough for the once-a-second watch to see the mark pass
        print("FILLED", len(held), len(healthy), stack.redis.info("memory")["used_memory"], refused)
        if at_maxmemory:
            used = int(stack.redis.info("memory")["used_memory"])
            stack.redis.config_set("maxmemory", used - 1024 * 1024)
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                stack.redis.set("probe", "x")
        else:
            assert isinstance(refused, BacklogFullError), f"Redis filled before the flag: {refused}"

        # Answered requests are recorded: the healthy vendor gets each accepted event once.
        wait_for(alive(lambda: set(ids_at(gravity)) == set(healthy)), timeout=60, what="every event at gravity")
        assert_alive()
        wait_for(alive(lambda: stack.settled("gravity")), timeout=30, what="gravity to settle")
        assert gravity.counters["duplicate"] == 0, f"{gravity.counters['duplicate']} events were sent again"
        # The worker lives and leases move: the down vendor keeps being probed.
        probes = len(down.requests)
        wait_for(alive(lambda: len(down.requests) >= probes + 3), timeout=30, what="more probes of the down vendor")
        assert_alive()
        # Gravity's acks freed a little room under the mark; top the down vendor's backlog up to it
        # again, so that what the next step shows is that only delivery, not probing, frees memory.
        # The top-up comes in calls twenty times smaller than the probe call after it: Redis's own
        # memory moves by some kilobytes as clients come and go, and a refusal within one call's
        # size of the mark would let a same-sized call through on that alone.
        for j in range(2000):
            try:
                held += stack.relay.enqueue([event(f"top{j}", n, pad=40) for n in range(10)], destinations=["down"])
            except EnqueueError as exc:
                assert not exc.maybe_stored, exc
                break
        else:
            raise AssertionError("the backlog never reached the high-water mark again")
        probes = len(down.requests)
        wait_for(alive(lambda: len(down.requests) >= probes + 2), timeout=30, what="more probes of the down vendor")
        with pytest.raises(EnqueueError):  # still full: what heals it next is delivery, not a person
            stack.relay.enqueue([event("while-full", n, pad=40) for n in range(200)], destinations=["down"])

        down.configure(fail_all_status=None)
        wait_for(alive(lambda: set(ids_at(down)) >= set(held)), timeout=60, what="the backlog at the vendor")
        assert_alive()

        def enqueue_again() -> list[str]:
            try:
                return stack.relay.enqueue(event("after", 0))
            except EnqueueError:
                time.sleep(0.2)
                return []

        again = wait_for(enqueue_again, timeout=30, what="enqueue to accept events again")
        wait_for(lambda: set(ids_at(gravity)) >= set(again) and set(ids_at(down)) >= set(again), what="the new event")
        stack.wait_settled("gravity")
        stack.wait_settled("down")
        assert gravity.counters["duplicate"] == 0
        assert len(ids_at(gravity)) == len(healthy) + 1
        assert_alive()
        assert stack.dead_letters() == []
    finally:
        stack.close()


# --- 4. outcome and lease scripts at maxmemory --------------------------------------------------


def test_outcomes_and_leases_are_written_at_maxmemory(flagged_redis):
    server = flagged_redis("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    client = redis.Redis.from_url(server.url(0))
    keys, dest = Keys("cr"), "full"
    stream, stats = keys.stream(dest), keys.stats(dest)
    token, other = uuid.uuid4().hex, uuid.uuid4().hex
    ids = [client.xadd(stream, {"c": b"{}"}).decode() for _ in range(10)]
    client.xgroup_create(stream, GROUP, id="0")
    client.xreadgroup(GROUP, consumer_name(0, token), {stream: ">"}, count=10)
    leases = Leases(client, keys)
    fill_to_oom(client)
    assert leases.acquire(dest, 0, token, 5.0)
    assert client.get(keys.lease(dest, 0)) == token.encode()
    fill_to_oom(client)
    assert leases.acquire(dest, 1, other, 5.0)
    assert not leases.acquire(dest, 0, other, 5.0)  # taken: still refused

    lease = DrainLease(client, keys, dest, 0, token, 5.0)
    fill_to_oom(client)
    assert lease.start(), "lease take-over from the task's token refused at maxmemory"
    assert client.get(keys.lease(dest, 0)) == lease.token.encode()
    fill_to_oom(client)
    assert lease._renew(), "heartbeat refused at maxmemory"
    fill_to_oom(client)
    assert lease.begin_request(3.0), "begin_request refused at maxmemory"
    assert client.hget(keys.inflight(dest, 0), lease.consumer) is not None

    write = lease.write()
    write.xack(stream, GROUP, *ids)
    write.xdel(stream, *ids)
    write.hincrby(stats, "ok", len(ids))
    write.hset(stats, {"last_ok_at": "1"})
    fill_to_oom(client)
    write.execute()
    assert client.xlen(stream) == 0 and client.xpending(stream, GROUP)["pending"] == 0
    assert client.hget(stats, "ok") == b"10" and client.hget(stats, "last_ok_at") == b"1"
    assert client.hget(keys.inflight(dest, 0), lease.consumer) is None

    fill_to_oom(client)
    lease.release()
    assert client.get(keys.lease(dest, 0)) is None
    client.close()


def test_enqueue_into_a_redis_at_maxmemory_says_it_is_out_of_memory(flagged_redis):
    server = flagged_redis("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    client = redis.Redis.from_url(server.url(1))
    fill_to_oom(client)
    table = {"vendor": "gravity_capi", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}
    settings = settings_from_document({"destinations": {"g": table}}, {"REDIS_URL": server.url(1), "K": "key"})
    with Relay(settings) as relay, pytest.raises(EnqueueError) as failed:
        relay.enqueue(event("oom", 0))
    assert not failed.value.maybe_stored and failed.value.event_ids == ["oom-0"]
    assert "out of memory" in str(failed.value), str(failed.value)
    client.close()
