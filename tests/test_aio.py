"""The asyncio producer (``AsyncRelay``) against a real private Redis: the sync producer's checks,
errors and script, awaited without holding the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import redis
import redis.asyncio

from conversion_relay import (
    AsyncRelay,
    BacklogFullError,
    ConfigurationError,
    EnqueueError,
    EventValidationError,
    Relay,
)
from conversion_relay.config.settings import Settings, settings_from_document
from conversion_relay.config.source import builtin_document
from conversion_relay.embedded import EmbeddedRedis
from conversion_relay.store import backlog
from conversion_relay.store.connection import connect
from conversion_relay.store.keys import Keys
from tests.conftest import DATA_DB
from tests.support import free_port, wait_for
from tests.test_redis_auth_tls import make_certificates

PURCHASE = {
    "event_name": "Purchase",
    "event_id": "order-1",
    "event_time": 1718973400,
    "user_data": {"em": ["Anna.Meyer@Example.com"], "external_id": ["42"]},
    "custom_data": {"value": 99.99, "currency": "EUR", "contents": [{"id": "SKU-1", "quantity": 1}]},
}

# Keeps the server busy for ARGV[1] ms (below Redis's busy-reply threshold of 5 s: every other
# client's command waits unread meanwhile, as in tests/test_enqueue_retry.py).
BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) * 1000
return 1
"""


def sandbox_settings(url: str, relay: dict[str, Any] | None = None, **destinations: dict[str, Any]) -> Settings:
    """The built-in sandbox configuration at ``url``, with ``relay`` keys and destination keys changed."""
    document = builtin_document({})
    document["relay"].update(relay or {})
    for name, changes in destinations.items():
        document["destinations"][name].update(changes)
    return settings_from_document(document, {"REDIS_URL": url}, sandbox=True)


@pytest.fixture
def settings(redis_server, data) -> Settings:
    return sandbox_settings(redis_server.url(DATA_DB))


def stored(data: redis.Redis, settings: Settings, destination: str) -> list[backlog.StoredEntry]:
    keys = Keys(settings.key_prefix)
    parts = settings.destination(destination).parallel_drains
    return [backlog.read(fields) for key in keys.streams(destination, parts) for _, fields in data.xrange(key)]


def run(coroutine_function: Any, settings: Settings) -> Any:
    """Run ``coroutine_function(relay)`` with a fresh AsyncRelay in a fresh event loop."""

    async def main() -> Any:
        async with AsyncRelay(settings) as relay:
            return await coroutine_function(relay)

    return asyncio.run(main())


def test_async_enqueue_stores_exactly_what_the_sync_relay_stores(settings, data):
    async def enqueue(relay):
        return await relay.enqueue(PURCHASE, destinations=["gravity"])

    assert run(enqueue, settings) == ["order-1"]
    with Relay(settings) as sync:
        sync.enqueue({**PURCHASE, "event_id": "order-2"}, destinations=["gravity"])
    first, second = (entry.canonical_event() for entry in stored(data, settings, "gravity"))
    assert first["user_data"]["em"][0] != "anna.meyer@example.com" and len(first["user_data"]["em"][0]) == 64
    assert {**first, "event_id": "order-2"} == second

    # The same call again is recognised by the same script: returns the ids, stores nothing.
    assert run(enqueue, settings) == ["order-1"]
    assert len(stored(data, settings, "gravity")) == 2
    assert int(data.hget(Keys(settings.key_prefix).stats("gravity"), "accepted")) == 2


def test_a_list_is_stored_for_every_enabled_destination_and_ids_are_filled_in(settings, data):
    async def enqueue(relay):
        return await relay.enqueue([PURCHASE, {"event_name": "Lead"}])

    ids = run(enqueue, settings)
    assert ids[0] == "order-1" and len(ids[1]) == 32
    for name in settings.destinations:
        assert [e.canonical_event()["event_id"] for e in stored(data, settings, name)] == ids, name


def test_an_invalid_call_raises_the_sync_relays_error_and_stores_nothing(settings, data):
    bad = [PURCHASE, {"event_name": "Purchase", "user_data": {"em": ["not an address"]}}, {"event_id": "x"}]

    async def enqueue(relay):
        with pytest.raises(EventValidationError) as caught:
            await relay.enqueue(bad)
        return caught.value

    error = run(enqueue, settings)
    with Relay(settings) as sync, pytest.raises(EventValidationError) as sync_caught:
        sync.enqueue(bad)
    assert str(error) == str(sync_caught.value) and error.messages == sync_caught.value.messages
    assert set(error.messages) == {1, 2} and "not an address" not in str(error)
    # No way back to the caller's plaintext: no chained marshmallow error, no relay frame
    # that still holds the events.
    assert error.__context__ is None and error.__cause__ is None
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    relay_frames = [f for f in frames if f.f_globals.get("__name__", "").startswith("conversion_relay")]
    assert relay_frames, "the traceback shows no relay frame: nothing tested"
    assert all("events" not in f.f_locals for f in relay_frames)
    assert all(stored(data, settings, name) == [] for name in settings.destinations)


def test_bad_destinations_are_refused_as_by_the_sync_relay(settings, data):
    async def enqueue(relay):
        errors = []
        for destinations in ([], ["gravity", "gravity"], ["nowhere"]):
            with pytest.raises(EventValidationError) as caught:
                await relay.enqueue(PURCHASE, destinations=destinations)
            errors.append(caught.value)
        return errors

    empty, twice, unknown = run(enqueue, settings)
    assert "Empty" in str(empty) and "named twice" in str(twice)
    assert isinstance(unknown, ConfigurationError) and "not configured" in str(unknown)
    assert stored(data, settings, "gravity") == []


def test_a_full_destination_refuses_alone_and_the_retry_stores_only_there(redis_server, data):
    settings = sandbox_settings(redis_server.url(DATA_DB), tracify={"max_backlog_events": 3})
    events = [{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(3)]

    async def scenario(relay):
        await relay.enqueue({"event_name": "Lead", "event_id": "waiting"}, destinations=["tracify"])
        with pytest.raises(BacklogFullError) as caught:
            await relay.enqueue(events, destinations=["gravity", "tracify"])
        data.delete(Keys(settings.key_prefix).stream("tracify"))  # as if delivered
        retried = await relay.enqueue(events, destinations=list(caught.value.full) + list(caught.value.stored_in))
        return caught.value, retried

    error, retried = run(scenario, settings)
    assert error.full == {"tracify": 1} and error.stored_in == ("gravity",)
    assert error.event_ids == ["lead-0", "lead-1", "lead-2"] == retried
    assert "max_backlog_events 3" in str(error) and "stored for gravity" in str(error)
    assert [e.canonical_event()["event_id"] for e in stored(data, settings, "gravity")] == error.event_ids
    assert [e.canonical_event()["event_id"] for e in stored(data, settings, "tracify")] == error.event_ids


def test_unreachable_redis_raises_enqueue_error_saying_nothing_was_stored(settings):
    down = dataclasses.replace(settings, redis_url=f"redis://:s3cret@127.0.0.1:{free_port()}/1")

    async def enqueue(relay):
        with pytest.raises(EnqueueError) as caught:
            await relay.enqueue([PURCHASE, {"event_name": "Lead"}])
        return caught.value

    error = run(enqueue, down)
    assert type(error) is EnqueueError and error.maybe_stored is False
    assert "could not be reached" in str(error) and "nothing was enqueued" in str(error)
    assert "s3cret" not in str(error)
    assert error.event_ids[0] == "order-1" and len(error.event_ids) == 2
    assert error.__context__ is None


def test_a_timeout_says_maybe_stored_and_the_retry_with_its_ids_leaves_one_copy(redis_server, data):
    settings = sandbox_settings(redis_server.url(DATA_DB), {"enqueue_timeout_seconds": 0.3})
    events = [{"event_name": "Lead"} for _ in range(5)]  # no ids: the relay generates them

    async def scenario(relay):
        await relay.redis.script_load(backlog.APPEND_SCRIPT)  # connected, script loaded
        busy = await Busy.start(settings, ms=1500)
        with pytest.raises(EnqueueError) as caught:
            await relay.enqueue(events, destinations=["gravity"])
        await busy.wait()
        error = caught.value
        retried = await relay.enqueue(
            [{**e, "event_id": i} for e, i in zip(events, error.event_ids)], destinations=["gravity"]
        )
        return error, retried

    error, retried = run(scenario, settings)
    assert error.maybe_stored is True and "may have been stored" in str(error)
    assert len(set(error.event_ids)) == 5 and retried == error.event_ids
    wait_for(lambda: len(stored(data, settings, "gravity")) >= 5, what="the script that outlived the timeout")
    assert [e.canonical_event()["event_id"] for e in stored(data, settings, "gravity")] == error.event_ids


def test_the_async_client_never_resends_a_timed_out_command(redis_server, data):
    # Dedup off, so only the client decides how many copies Redis receives.
    settings = sandbox_settings(redis_server.url(DATA_DB), {"enqueue_timeout_seconds": 0.3, "enqueue_dedup_seconds": 0})

    async def scenario(relay):
        await relay.redis.script_load(backlog.APPEND_SCRIPT)
        busy = await Busy.start(settings, ms=1000)
        with pytest.raises(EnqueueError) as caught:
            await relay.enqueue([{"event_name": "Lead"} for _ in range(10)], destinations=["gravity"])
        await busy.wait()
        return caught.value

    assert run(scenario, settings).maybe_stored is True
    wait_for(lambda: len(stored(data, settings, "gravity")) >= 10, what="the timed-out script")
    assert len(stored(data, settings, "gravity")) == 10  # one copy: sent once


def test_waiting_for_redis_leaves_the_event_loop_free(redis_server, data, settings):
    """While Redis holds two enqueues back (a write pause), the loop runs on: both are pending at
    once, and it is another coroutine of the same loop that lets them through.  A producer that
    blocked the loop would have finished (or timed out) before that coroutine could run."""
    pauser = redis.Redis.from_url(settings.redis_url)
    version = tuple(int(x) for x in pauser.info("server")["redis_version"].split(".")[:2])
    if version < (6, 2):
        pytest.skip(f"CLIENT PAUSE ... WRITE needs Redis 6.2; this is {version}")
    steps: list[str] = []

    async def scenario(relay):
        await relay.redis.script_load(backlog.APPEND_SCRIPT)
        pauser.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # scripts wait; other commands run
        first = asyncio.create_task(relay.enqueue({**PURCHASE, "event_id": "a"}, destinations=["gravity"]))
        second = asyncio.create_task(relay.enqueue({**PURCHASE, "event_id": "b"}, destinations=["tracify"]))
        while not (first.done() or second.done()) and len(steps) < 5:
            steps.append("ticked while both enqueues wait")
            await asyncio.sleep(0.02)
        steps.append(f"first done: {first.done()}, second done: {second.done()}")
        async with redis.asyncio.Redis.from_url(settings.redis_url) as other:
            await other.execute_command("CLIENT", "UNPAUSE")
        return await first, await second

    try:
        assert run(scenario, settings) == (["a"], ["b"])
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        pauser.close()
    assert steps == ["ticked while both enqueues wait"] * 5 + ["first done: False, second done: False"]
    assert [e.canonical_event()["event_id"] for e in stored(data, settings, "gravity")] == ["a"]
    assert [e.canonical_event()["event_id"] for e in stored(data, settings, "tracify")] == ["b"]


def test_native_payloads_are_checked_and_stored_as_the_sync_relay_does(settings, data):
    items = [{"itemId": f"SKU-{i}", "nameValues": [{"name": "title", "value": "Shoe"}]} for i in (1, 2)]

    async def enqueue(relay):
        count = await relay.enqueue_native("reco", items, operation="addItems")
        with pytest.raises(EventValidationError) as caught:
            await relay.enqueue_native("reco", [{"nameValues": []}], operation="addItems")
        with pytest.raises(EventValidationError) as disabled:
            await relay.enqueue_native(5, items)
        return count, caught.value, disabled.value

    count, invalid, not_a_name = run(enqueue, settings)
    assert count == 2 and invalid.messages and list(not_a_name.messages) == ["destination"]
    with Relay(settings) as sync, pytest.raises(EventValidationError) as sync_caught:
        sync.enqueue_native("reco", [{"nameValues": []}], operation="addItems")
    assert str(invalid) == str(sync_caught.value)
    assert [e.native_item() for e in stored(data, settings, "reco")] == [("addItems", item) for item in items]


def test_enqueue_survives_a_redis_that_forgot_its_scripts(settings, data):
    async def scenario(relay):
        await relay.enqueue({**PURCHASE, "event_id": "before"}, destinations=["gravity"])
        await relay.redis.script_flush()  # as after a Redis restart
        return await relay.enqueue({**PURCHASE, "event_id": "after"}, destinations=["gravity"])

    assert run(scenario, settings) == ["after"]
    assert [e.canonical_event()["event_id"] for e in stored(data, settings, "gravity")] == ["before", "after"]


def test_explain_is_the_sync_relays_explain(settings):
    async def explain(relay):
        return relay.explain(PURCHASE)

    with Relay(settings) as sync:
        assert run(explain, settings).as_dict() == sync.explain(PURCHASE).as_dict()


def test_an_empty_list_stores_nothing_and_connects_to_nothing(settings):
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/1")

    async def enqueue(relay):
        return await relay.enqueue([]), relay.prepare([]).ids

    assert run(enqueue, down) == ([], ())


class Busy:
    """Redis runs a script for ``ms`` milliseconds; commands of other clients wait until it ends."""

    def __init__(self, conn: redis.Connection) -> None:
        self.conn = conn

    @classmethod
    async def start(cls, settings: Settings, ms: int) -> Busy:
        where = connect(settings.redis_url).connection_pool.connection_kwargs
        conn = redis.Connection(host=where["host"], port=where["port"])
        conn.send_command("EVAL", BUSY, 0, ms)
        probe = connect(settings.redis_url, socket_timeout=0.05)
        wait_for(lambda: _times_out(probe.ping), timeout=5, interval=0.01, what="Redis to be busy")
        probe.close()
        return cls(conn)

    async def wait(self) -> None:
        await asyncio.to_thread(self.conn.read_response)  # the busy script's reply: Redis is free
        self.conn.disconnect()


def _times_out(call: Any) -> bool:
    try:
        call()
    except redis.TimeoutError:
        return True
    return False


def test_a_tls_redis_with_a_password_takes_the_url_the_sync_relay_takes(tmp_path):
    """``rediss://`` with the CA in the URL, and a password: read by redis.asyncio as by redis-py."""
    try:
        server = EmbeddedRedis(databases=2, password="s3cret-aio", tls=make_certificates(tmp_path / "tls"))
    except RuntimeError as exc:
        pytest.fail(f"{exc}: this test needs a redis-server built with TLS (Debian's and Ubuntu's are)")
    try:
        url = server.url(1)
        assert url.startswith("rediss://") and "ssl_ca_certs=" in url
        settings = sandbox_settings(url)

        async def enqueue(relay):
            return await relay.enqueue(PURCHASE, destinations=["gravity"])

        assert run(enqueue, settings) == ["order-1"]
        client = connect(url)
        assert [e.canonical_event()["event_id"] for e in stored(client, settings, "gravity")] == ["order-1"]
        client.close()
        wrong = dataclasses.replace(settings, redis_url=server.url(1, user="default", password="wrong"))
        with pytest.raises(EnqueueError) as caught:
            run(enqueue, wrong)
        assert "wrong" not in str(caught.value) and "s3cret" not in str(caught.value)
    finally:
        server.stop()
