"""A Redis restart under load: the worker reconnects and delivers the rest; nothing dies.

The broker and the relay's data share one redis-server here, as in the tests' other stacks, but
this one is private to the test (append-only file on, data in ``tmp_path``) so it can be killed
with ``kill -9`` and started again on the same port with the same files -- the session's server
must never be killed.

What used to go wrong (Celery 5.7.0, kombu 5.7.0, any redis-py): an acks_late drain running
while the consumer waited in BRPOP, Redis killed, and the worker's main process exited with
``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``.  See
:mod:`conversion_relay.worker.broker`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conversion_relay.embedded import EmbeddedRedis
from tests.conftest import FAST_RELAY, Stack, gravity_destination
from tests.support import wait_for

#: Small requests that each take a while at the sandbox, so a drain is mid-run for the whole
#: test and several requests are left when Redis goes away.
MAX_EVENTS = 100
EVENTS = 2000
LATENCY_SECONDS = 0.25
#: How long Redis stays down; the worker must ride it out, not time it.
DOWN_SECONDS = 2.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server with an append-only file, to be killed and started again."""
    server = EmbeddedRedis(tmp_path / "redis", persist=True, databases=4)
    yield server
    server.stop()


def purchases(n: int) -> list[dict[str, object]]:
    return [
        {"event_name": "Purchase", "event_id": f"restart-{i}", "user_data": {"em": [f"r{i}@example.com"]}}
        for i in range(n)
    ]


def stored_ids(gravity) -> set[str]:
    return {e["event_id"] for e in gravity.events}


def test_worker_survives_a_redis_restart_under_load_and_delivers_the_rest(own_redis, sandbox, gravity, tmp_path):
    directory = tmp_path / "stack"
    directory.mkdir()
    destinations = {"gravity": gravity_destination(sandbox, max_events=MAX_EVENTS)}
    stack = Stack(own_redis, directory, dict(FAST_RELAY), destinations)
    try:
        gravity.configure(latency_seconds=LATENCY_SECONDS)
        worker = stack.start_worker(concurrency=2)
        events = purchases(EVENTS)
        ids = []
        for start in range(0, EVENTS, 500):
            ids += stack.relay.enqueue(events[start : start + 500])
        # A drain is mid-request: its task message is unacknowledged (acks_late), and the
        # worker's other process is free, so the consumer is waiting in BRPOP.
        wait_for(lambda: gravity.in_flight >= 1 and len(stored_ids(gravity)) >= MAX_EVENTS, what="a drain mid-run")

        own_redis.kill()
        assert not stored_ids(gravity) >= set(ids), "Redis went away too late to test anything"
        time.sleep(DOWN_SECONDS)
        own_redis.start()

        wait_for(
            lambda: stored_ids(gravity) >= set(ids) or worker.proc.poll() is not None,
            timeout=60,
            what="every event after the restart",
        )
        output = worker.output()
        assert worker.proc.poll() is None, f"the worker died:\n{output[-4000:]}"
        assert "Unrecoverable error" not in output, output[-4000:]
        assert stored_ids(gravity) >= set(ids)
        stack.wait_settled()
        assert stack.dead_letters() == []
    finally:
        stack.close()
