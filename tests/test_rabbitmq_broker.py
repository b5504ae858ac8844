"""RabbitMQ as the Celery broker: delivery, retries, ``kill -9`` and the ``relay.enqueue`` and
``relay.admin`` tasks, with real workers whose only broker is a private RabbitMQ vhost.

The relay's data stays in the private Redis of the session (``redis_server``); only Celery's
messages go through RabbitMQ. The module makes its own vhost and user (``tests/rabbitmq.py``)
and removes both afterwards; it is skipped, saying why, where no RabbitMQ can be used.
Every test checks that its messages really went through that vhost, so none of them can pass
on the Redis broker by accident.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from tests import rabbitmq
from tests.rabbitmq import PrivateVhost
from tests.support import wait_for

RELAY_QUEUES = {"relay.ingest", "relay.admin", "relay.gravity"}

CRASH_RELAY = {
    # As in test_crash; the quick take-over of a dead worker's events comes from the fast test
    # settings (conftest.FAST_RELAY). With RabbitMQ the dead worker's drain message comes back
    # as soon as its connection closes: the visibility timeout is a Redis-transport setting.
    "drain_budget_seconds": 3.0,
}


@pytest.fixture(scope="module")
def vhost() -> Iterator[PrivateVhost]:
    """This module's private vhost and user, removed when the module is done."""
    reason = rabbitmq.unavailable_reason()
    if reason is not None:
        if rabbitmq.required():
            pytest.fail(f"CONVERSION_RELAY_TEST_RABBITMQ=require, but {reason}")
        pytest.skip(reason)
    with rabbitmq.private_vhost() as made:
        yield made


@pytest.fixture
def amqp_stack(make_stack: Any, vhost: PrivateVhost) -> Any:
    """``make_stack`` with CONVERSION_RELAY_BROKER_URL pointing at the private vhost; the relay's
    queues there are emptied first, so no message of an earlier test reaches this one's worker."""
    with Connection(vhost.url, connect_timeout=5) as conn:
        channel = conn.default_channel
        for name in vhost.queues():
            channel.queue_purge(name)

    def build(relay: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        stack = make_stack(relay=relay, CONVERSION_RELAY_BROKER_URL=vhost.url, **kwargs)
        assert stack.settings.broker_url == vhost.url  # extra env wins over the Redis default
        return stack

    return build


@pytest.fixture
def client(vhost: PrivateVhost, redis_server: Any) -> Iterator[Celery]:
    """A plain Celery client, as another app would have: JSON, the vhost, the relay's results."""
    from tests.conftest import DATA_DB

    app = Celery(broker=vhost.url, backend=redis_server.url(DATA_DB))
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    yield app
    app.close()


def assert_went_through_rabbitmq(vhost: PrivateVhost, *workers: Any, tasks: tuple[str, ...] = ("relay.drain",)) -> None:
    """Each worker's only transport was the vhost, it received the tasks, and the vhost holds the
    relay's queues (durable, on their own direct exchanges)."""
    banner = re.compile(rf"transport:\s+amqp://{re.escape(vhost.user)}:\*\*@127\.0\.0\.1:\d+/{re.escape(vhost.name)}\b")
    for worker in workers:
        out = worker.output()
        assert banner.search(out), f"the worker's broker is not the private vhost:\n{out[:2000]}"
        assert "redis://" not in out.split("transport:", 1)[1].splitlines()[0]
    logs = "".join(w.output() for w in workers)
    for task in tasks:
        assert re.search(rf"Task {re.escape(task)}\[[0-9a-f-]+\] received", logs), f"no {task} went through"
    queues = vhost.queues()
    assert RELAY_QUEUES <= set(queues), queues
    assert all(queues[name]["durable"] for name in RELAY_QUEUES), queues
    exchanges = vhost.exchanges()
    assert all(exchanges.get(name) == "direct" for name in RELAY_QUEUES), exchanges


def purchase(i: int, prefix: str = "order") -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": f"{prefix}-{i}",
        "user_data": {"em": [f"customer{i}@example.com"], "external_id": [str(i)]},
        "custom_data": {"value": 10.0 + i, "currency": "EUR", "order_id": str(i)},
    }


def queued(vhost: PrivateVhost, queue: str) -> int:
    """Messages in the vhost's queue, ready or delivered and not yet acknowledged."""
    return int(vhost.queues().get(queue, {}).get("messages", 0))


def stored_ids(gravity: Any) -> set[str]:
    return {e["event_id"] for e in gravity.events}


def test_the_visibility_timeout_goes_to_a_redis_broker_only(tmp_path):
    """The Redis transport needs it; the AMQP transport would pass it to amqp.Connection."""
    from tests.conftest import FAST_RELAY, KEY_ENV, destination
    from tests.support import write_config

    config = write_config(
        tmp_path / "relay.toml", FAST_RELAY, {"gravity": destination("gravity_capi", "http://127.0.0.1:9")}
    )
    script = (
        "import json; from conversion_relay.worker.app import app; "
        "print(json.dumps([app.conf.broker_url.split(':')[0], app.conf.broker_transport_options]))"
    )
    seen = []
    for broker in ("redis://127.0.0.1:1/0", "amqp://u:p@127.0.0.1:1/v", "amqps://u:p@127.0.0.1:1/v"):
        env = {
            **os.environ,
            "REDIS_URL": "redis://127.0.0.1:1/1",
            "CONVERSION_RELAY_BROKER_URL": broker,
            "CONVERSION_RELAY_CONFIG": str(config),
            KEY_ENV: "k",
        }
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        seen.append(json.loads(done.stdout.strip().splitlines()[-1]))
    timeout = int(FAST_RELAY["visibility_timeout_seconds"])
    assert seen == [["redis", {"visibility_timeout": timeout}], ["amqp", {}], ["amqps", {}]]


def test_the_vhost_and_user_are_private(vhost):
    assert vhost.name.startswith("cr-test-") and vhost.name in rabbitmq.ctl("list_vhosts").split()
    permissions = rabbitmq.ctl("list_user_permissions", vhost.user, "--formatter", "json")
    assert [p["vhost"] for p in json.loads(permissions)] == [vhost.name]


def test_events_are_delivered_over_rabbitmq(amqp_stack, gravity, vhost):
    stack = amqp_stack()
    worker = stack.start_worker()
    ids = stack.relay.enqueue([purchase(i) for i in range(2500)])

    wait_for(lambda: gravity.counters["ok"] == 2500, what="2,500 events at the sandbox")
    stack.wait_settled()
    assert sorted(e["event_id"] for e in gravity.events) == sorted(ids)
    counts = [r["event_count"] for r in gravity.requests]
    assert max(counts) <= 1000 and len(counts) == 3, counts
    assert stack.counters()["delivered"] == 2500
    assert stack.dead_letters() == []
    assert_went_through_rabbitmq(vhost, worker)
    assert all(q["consumers"] >= 1 for name, q in vhost.queues().items() if name in RELAY_QUEUES)


def test_server_errors_are_retried_until_delivered_over_rabbitmq(amqp_stack, gravity, vhost):
    stack = amqp_stack()
    worker = stack.start_worker()
    gravity.configure(statuses=[503, 502, {"status": 503, "retry_after": "1"}])
    ids = stack.relay.enqueue([purchase(i) for i in range(20)])

    wait_for(lambda: gravity.counters["ok"] == 20, what="delivery after three server errors")
    stack.wait_settled()
    assert [r["status"] for r in gravity.requests] == [503, 502, 503, 200]
    assert gravity.requests[3]["at"] - gravity.requests[2]["at"] >= 0.9  # Retry-After honoured
    assert stored_ids(gravity) == set(ids)
    counters = stack.counters()
    assert counters["retried"] >= 20 and counters["dead_lettered"] == 0
    assert stack.dead_letters() == []
    assert_went_through_rabbitmq(vhost, worker)


def test_worker_killed_while_a_request_is_in_flight_loses_nothing_over_rabbitmq(amqp_stack, gravity, vhost):
    stack = amqp_stack(relay=CRASH_RELAY)
    worker = stack.start_worker()
    gravity.configure(latency_seconds=1.5)
    ids = stack.relay.enqueue([purchase(i, "kill") for i in range(3000)])

    wait_for(lambda: gravity.in_flight >= 1, timeout=20, what="a request in flight")
    worker.kill()
    gravity.configure(latency_seconds=0.0)
    backlog = stack.admin.status()["gravity"]["backlog"]
    assert backlog["unread"] + backlog["pending"] > 0, "the kill came too late to test anything"
    # The running drain's unacknowledged message is back in its queue at once: RabbitMQ returns
    # it when the connection closes (a Redis broker would wait for the visibility timeout).
    wait_for(lambda: queued(vhost, "relay.gravity") >= 1, timeout=5, what="the drain message back")

    second = stack.start_worker()
    wait_for(lambda: stored_ids(gravity) >= set(ids), timeout=60, what="every event after the kill")
    stack.wait_settled()
    assert stored_ids(gravity) == set(ids)
    assert stack.dead_letters() == []
    assert stack.counters()["reclaimed"] > 0
    assert gravity.counters["ok"] == 3000
    assert gravity.counters["duplicate"] == stack.counters()["duplicate"]
    assert_went_through_rabbitmq(vhost, worker, second)


def test_relay_enqueue_task_is_queued_in_rabbitmq_and_delivered(amqp_stack, gravity, vhost, client):
    stack = amqp_stack()
    # No worker yet: the message must wait in the vhost's relay.ingest queue.
    client.send_task("relay.enqueue", args=[[purchase(1), purchase(2)]], queue="relay.ingest")
    client.send_task("relay.enqueue", args=[[{"event_id": "no-name"}]], queue="relay.ingest")
    wait_for(lambda: queued(vhost, "relay.ingest") == 2, timeout=10, what="both messages in relay.ingest")

    worker = stack.start_worker()
    wait_for(lambda: gravity.counters["ok"] == 2, what="events sent through relay.enqueue")
    wait_for(lambda: "rejected" in worker.output(), what="the invalid message to be rejected")
    assert "event_name: Missing data for required field." in worker.output()
    stack.wait_settled()
    assert stored_ids(gravity) == {"order-1", "order-2"}
    wait_for(lambda: queued(vhost, "relay.ingest") == 0, timeout=10, what="relay.ingest to be empty")
    assert_went_through_rabbitmq(vhost, worker, tasks=("relay.enqueue", "relay.drain"))


def test_relay_admin_task_over_rabbitmq_lists_and_replays_dead_letters(amqp_stack, gravity, vhost, client):
    stack = amqp_stack()
    gravity.configure(statuses=[401])
    stack.relay.enqueue([purchase(i) for i in range(5)])
    status = client.send_task("relay.admin", args=["status"], queue="relay.admin")
    wait_for(lambda: queued(vhost, "relay.admin") == 1, timeout=10, what="the message to wait in RabbitMQ")

    worker = stack.start_worker()
    assert status.get(timeout=30)["gravity"]["counters"]["accepted"] == 5
    wait_for(lambda: len(stack.dead_letters()) == 1, what="the refused batch to be dead-lettered")
    stack.wait_settled()

    def admin(*args: str, **kwargs: Any) -> Any:
        return client.send_task("relay.admin", args=list(args), kwargs=kwargs, queue="relay.admin").get(timeout=30)

    assert [e["events"] for e in admin("list", reason="http_401")["entries"]] == [5]
    dry = admin("replay", destination="gravity")
    assert dry["dry_run"] is True and dry["entries"] == 1 and dry["done"] == 0
    assert admin("replay", destination="gravity", dry_run=False)["done"] == 1
    wait_for(lambda: gravity.counters["ok"] == 5, what="replayed events")
    stack.wait_settled()
    assert stack.dead_letters() == []
    assert admin("status")["gravity"]["counters"]["delivered"] == 5
    assert_went_through_rabbitmq(vhost, worker, tasks=("relay.admin", "relay.drain"))
