"""An ambiguous enqueue is safe to retry.

A timeout says the events may have been stored and carries their ids; the same call again
(destinations, ids, names) within ``enqueue_dedup_seconds`` is recognised and stores nothing;
the relay's client never re-sends a timed-out command; ``relay.enqueue`` fixes missing ids from
its task id before its first attempt.

A real "stored, but the producer timed out" needs Redis to run the script after the producer
gave up.  A script from another client that keeps the server busy does that: the producer's
command waits unread in its socket and runs once the server is free.  ``CLIENT PAUSE`` does
not: Redis drops a paused client's command when the client disconnects, so that timeout stores
nothing (tested too: the retry must then store the events).
"""

from __future__ import annotations

import dataclasses
import importlib
import uuid

import pytest
import redis
from celery import Celery

from conversion_relay import BacklogFullError, EnqueueError, EventValidationError, Relay
from conversion_relay.store.connection import connect
from tests.conftest import gravity_destination, reco_destination
from tests.support import UNUSED_REDIS, free_port, wait_for

TIMEOUT = {"enqueue_timeout_seconds": 0.3}

# Keeps the server busy for ARGV[1] ms; every other client's command waits meanwhile.
BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) * 1000
return 1
"""


def purchases(n):
    return [{"event_name": "Purchase", "custom_data": {"value": i + 1.0, "currency": "EUR"}} for i in range(n)]


def with_ids(events, ids):
    return [{**event, "event_id": event_id} for event, event_id in zip(events, ids, strict=True)]


def stored(stack, dest="gravity"):
    parts = stack.settings.destination(dest).parallel_drains
    return sum(stack.redis.xlen(key) for key in stack.keys.streams(dest, parts))


def warm(client, relay):
    """Connect and load the append script now, so the enqueue under test sends only the script."""
    client.script_load(relay._append.script)


def timed_out(call):
    try:
        call()
    except redis.TimeoutError:
        return True
    return False


class Busy:
    """Redis runs a script for ``ms`` milliseconds; commands of other clients wait until it ends."""

    def __init__(self, stack, ms=1500):
        where = stack.redis.connection_pool.connection_kwargs
        self.conn = redis.Connection(host=where["host"], port=where["port"])
        self.conn.send_command("EVAL", BUSY, 0, ms)
        probe = connect(stack.settings.redis_url, socket_timeout=0.05)
        wait_for(lambda: timed_out(probe.ping), timeout=5, interval=0.01, what="Redis to be busy")
        probe.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.conn.read_response()  # the busy script's reply: the server is free again
        self.conn.disconnect()


def test_a_timeout_after_redis_stored_the_events_is_safe_to_retry(make_stack, gravity):
    stack = make_stack(relay=TIMEOUT)
    relay = stack.relay
    warm(relay.redis, relay)
    events = purchases(20)  # no event_ids: the relay generates them
    with Busy(stack), pytest.raises(EnqueueError) as caught:
        relay.enqueue(events, destinations=["gravity"])
    error = caught.value
    assert error.maybe_stored is True
    assert "may have been stored" in str(error)
    assert "nothing was enqueued" not in str(error)
    assert len(error.event_ids) == 20 and len(set(error.event_ids)) == 20

    wait_for(lambda: stored(stack) == 20, what="the script that outlived the timeout")
    assert stack.counters()["accepted"] == 20

    # The retry the message asks for: the same events with the ids the error carries.
    assert relay.enqueue(with_ids(events, error.event_ids), destinations=["gravity"]) == error.event_ids
    assert stored(stack) == 20
    assert stack.counters()["accepted"] == 20

    stack.start_worker()
    wait_for(lambda: gravity.counters["ok"] >= 20, what="delivery")
    stack.wait_settled()
    assert sorted(e["event_id"] for e in gravity.events) == sorted(error.event_ids)
    assert gravity.counters["duplicate"] == 0


def test_a_timeout_while_redis_is_paused_is_retried_into_one_copy(make_stack):
    stack = make_stack(relay=TIMEOUT)
    version = tuple(int(x) for x in stack.redis.info("server")["redis_version"].split(".")[:2])
    if version < (6, 2):
        pytest.skip(f"CLIENT PAUSE ... WRITE needs Redis 6.2; this is {version}")
    relay = stack.relay
    warm(relay.redis, relay)
    events = purchases(5)
    pauser = redis.Redis.from_url(stack.settings.redis_url)
    pauser.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    with pytest.raises(EnqueueError) as caught:
        relay.enqueue(events, destinations=["gravity"])
    assert caught.value.maybe_stored is True
    pauser.set("test:unpaused", 1)  # a write: returns once the pause is over
    pauser.close()
    # Whether or not the paused command ran, the retry leaves exactly one copy.
    relay.enqueue(with_ids(events, caught.value.event_ids), destinations=["gravity"])
    assert stored(stack) == 5
    assert stack.counters()["accepted"] == 5


def test_a_refused_connection_says_nothing_was_enqueued(make_stack):
    stack = make_stack()
    relay = Relay(dataclasses.replace(stack.settings, redis_url=f"redis://127.0.0.1:{free_port()}/1"))
    with pytest.raises(EnqueueError) as caught:
        relay.enqueue([{"event_name": "Lead", "event_id": "mine"}, {"event_name": "Lead"}])
    error = caught.value
    assert error.maybe_stored is False
    assert "nothing was enqueued" in str(error)
    assert "may have been stored" not in str(error)
    assert error.event_ids[0] == "mine" and len(error.event_ids) == 2
    relay.close()


def test_the_same_call_within_the_window_is_stored_once(make_stack, sandbox):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox), "small": gravity_destination(sandbox)})
    events = [{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(3)]
    ids = stack.relay.enqueue(events, destinations=["gravity"])
    assert stack.relay.enqueue(events, destinations=["gravity"]) == ids  # returns normally
    assert stored(stack) == 3 and stack.counters()["accepted"] == 3

    # Each destination remembers the call: with one more, only the one missing it stores it.
    stack.relay.enqueue(events, destinations=["small", "gravity"])
    assert stored(stack) == 3 and stored(stack, "small") == 3
    calls = stack.redis.keys(stack.keys.call("*"))
    assert len(calls) == 2
    assert all(0 < stack.redis.pttl(key) <= 120_000 for key in calls)


def test_a_dedup_window_of_zero_stores_every_call(make_stack):
    stack = make_stack(relay={"enqueue_dedup_seconds": 0})
    events = [{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(3)]
    stack.relay.enqueue(events)
    stack.relay.enqueue(events)
    assert stored(stack) == 6 and stack.counters()["accepted"] == 6
    assert stack.redis.keys(stack.keys.call("*")) == []


def test_the_client_never_resends_a_timed_out_command(make_stack):
    # Dedup off, so only the client decides how many copies Redis receives.
    stack = make_stack(relay={**TIMEOUT, "enqueue_dedup_seconds": 0})
    relay = stack.relay
    warm(relay.redis, relay)
    with Busy(stack), pytest.raises(EnqueueError):
        relay.enqueue(purchases(10), destinations=["gravity"])
    wait_for(lambda: stored(stack) >= 10, what="the timed-out script")
    assert stored(stack) == 10  # one copy: the relay's client sent the script once

    # redis-py's own default client (a Retry of 10) re-sends it, and even reports success.
    own = relay.redis
    where = own.connection_pool.connection_kwargs
    relay.redis = redis.Redis(host=where["host"], port=where["port"], db=where["db"], socket_timeout=0.3)
    own.close()
    warm(relay.redis, relay)
    with Busy(stack):
        relay.enqueue(purchases(10), destinations=["gravity"])
    copies = (stored(stack) - 10) // 10
    assert copies > 1, f"{copies} copies with redis-py's default client"


def test_the_enqueue_task_fixes_ids_so_a_redelivery_is_stored_once(make_stack, gravity):
    stack = make_stack()
    worker = stack.start_worker()
    client = Celery(broker=stack.env["CONVERSION_RELAY_BROKER_URL"])
    client.conf.update(task_serializer="json", accept_content=["json"])
    events = purchases(3)  # no event_ids
    for _ in range(2):  # what a broker redelivery or a task retry looks like
        client.send_task("relay.enqueue", args=[events], task_id="fixed-1", queue="relay.ingest")
    wait_for(lambda: worker.output().count("relay.enqueue[fixed-1] succeeded") == 2, what="both messages")
    client.close()
    assert stack.counters()["accepted"] == 3

    expected = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay.enqueue:fixed-1:{i}")) for i in range(3)]
    wait_for(lambda: gravity.counters["ok"] >= 3, what="delivery")
    stack.wait_settled()
    assert sorted(e["event_id"] for e in gravity.events) == sorted(expected)
    assert gravity.counters["duplicate"] == 0


@pytest.fixture
def ingest(monkeypatch):
    """``conversion_relay.tasks.ingest`` needs settings to import; these are built, never connected."""
    monkeypatch.setenv("REDIS_URL", UNUSED_REDIS)
    monkeypatch.setenv("CONVERSION_RELAY_CONFIG", "sandbox")
    monkeypatch.delenv("CONVERSION_RELAY_BROKER_URL", raising=False)
    return importlib.import_module("conversion_relay.tasks.ingest")


def test_with_fixed_ids_fills_missing_ids_from_the_task_id_and_index(ingest):
    events = [{"event_name": "Lead"}, {"event_name": "Lead", "event_id": "mine"}, {"event_name": "Lead"}]
    fixed = ingest.with_fixed_ids(events, "task-1")
    derived = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay.enqueue:task-1:{i}")) for i in (0, 2)]
    assert [e["event_id"] for e in fixed] == [derived[0], "mine", derived[1]]
    assert ingest.with_fixed_ids(events, "task-1") == fixed  # a retry: the same ids
    assert ingest.with_fixed_ids(events, "task-2")[0]["event_id"] != derived[0]
    assert "event_id" not in events[0]  # the caller's events are not changed


def test_with_fixed_ids_takes_one_event_and_leaves_non_events_to_validation(ingest):
    one = ingest.with_fixed_ids({"event_name": "Lead"}, "task-1")
    assert one["event_id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "relay.enqueue:task-1:0"))
    assert ingest.with_fixed_ids("Purchase", "task-1") == "Purchase"
    assert ingest.with_fixed_ids(["x", None], "task-1") == ["x", None]


def test_the_same_call_after_a_full_destination_refused_it_stores_only_what_is_missing(make_stack, sandbox):
    small = gravity_destination(sandbox, max_backlog_events=4)
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox), "small": small})
    stack.relay.enqueue([{"event_name": "Lead", "event_id": "earlier"}], destinations=["small"])
    stack.relay.enqueue([{"event_name": "Lead", "event_id": f"earlier-{i}"} for i in range(2)], destinations=["small"])
    events = [{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(3)]
    with pytest.raises(BacklogFullError) as caught:
        stack.relay.enqueue(events)
    assert caught.value.full == {"small": 3} and caught.value.stored_in == ("gravity",)
    assert "small (3 events waiting, max_backlog_events 4)" in str(caught.value)
    stack.redis.delete(stack.keys.stream("small"))  # delivered meanwhile
    assert stack.relay.enqueue(events) == caught.value.event_ids
    assert stored(stack) == 3 and stored(stack, "small") == 3


def test_a_call_larger_than_a_destinations_cap_is_refused_as_invalid(make_stack, sandbox):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox, max_backlog_events=2)})
    with pytest.raises(EventValidationError, match="more than destination 'gravity' may hold"):
        stack.relay.enqueue([{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(3)])
    assert stored(stack) == 0


def test_the_same_native_payload_within_the_window_is_stored_once(make_stack, sandbox):
    stack = make_stack(destinations={"reco": reco_destination(sandbox)})
    items = [{"itemId": "SKU-1", "nameValues": [{"name": "title", "value": "Shoe"}]}]
    assert stack.relay.enqueue_native("reco", items, operation="addItems") == 1
    assert stack.relay.enqueue_native("reco", items, operation="addItems") == 1
    assert stored(stack, "reco") == 1
