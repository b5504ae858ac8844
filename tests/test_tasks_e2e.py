"""The Celery tasks other programs call: ``relay.enqueue`` and ``relay.admin``, through a real
worker, and replay of dead letters back to the vendor."""

from __future__ import annotations

import base64
import json
import uuid

from conversion_relay.store.deadletter import Selection
from tests.support import wait_for


def purchase(i):
    return {"event_name": "Purchase", "event_id": f"t-{i}", "custom_data": {"value": 1.0, "currency": "EUR"}}


def test_relay_enqueue_task_validates_and_delivers(stack, gravity, client):
    hashed = "e233d4a29013e9d87150c6237c6777bedf379ebf1acdc5d6126fec7e8bb74fb5"
    client.send_task(
        "relay.enqueue",
        args=[[purchase(1), {**purchase(2), "user_data": {"em": [hashed]}}]],
        kwargs={"destinations": ["gravity"]},
        queue="relay.ingest",
    )
    wait_for(lambda: gravity.counters["ok"] == 2, what="events sent through relay.enqueue")
    assert gravity.events[1]["user_data"]["em"] == [hashed]


def test_relay_enqueue_task_rejects_bad_events_whole(stack, gravity, client):
    client.send_task(
        "relay.enqueue",
        args=[[purchase(1), {"event_id": "no-name"}]],
        kwargs={"destinations": ["gravity"]},
        queue="relay.ingest",
    )
    wait_for(lambda: "relay.enqueue" in stack.workers[0].output() and "rejected" in stack.workers[0].output())
    assert "event 1: event_name: Missing data for required field." in stack.workers[0].output()
    assert stack.redis.xlen(stack.keys.stream("gravity")) == 0
    assert gravity.counters["ok"] == 0


def test_a_raw_json_message_from_any_celery_client_is_accepted(stack, gravity):
    """What a PHP or Node producer puts on the broker: Celery protocol 2, JSON, nothing Python."""
    task_id = str(uuid.uuid4())
    body = json.dumps(
        [
            [[purchase(3)]],
            {"destinations": ["gravity"]},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        ]
    )
    message = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "relay.enqueue",
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "",
            "kwargsrepr": "",
            "origin": "php@shop",
            "retries": 0,
        },
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "relay.ingest", "routing_key": "relay.ingest"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    import redis

    broker = redis.Redis.from_url(stack.env["CONVERSION_RELAY_BROKER_URL"])
    broker.lpush("relay.ingest", json.dumps(message))
    wait_for(lambda: gravity.counters["ok"] == 1, what="the raw message's event")
    assert gravity.events[0]["event_id"] == "t-3"


def test_pickle_messages_are_refused(stack, gravity, client):
    client.conf.task_serializer = "pickle"
    client.conf.accept_content = ["pickle", "json"]
    client.send_task("relay.enqueue", args=[[purchase(4)]], queue="relay.ingest")
    wait_for(
        lambda: "pickle" in stack.workers[0].output().lower() and "refus" in stack.workers[0].output().lower(),
        what="the worker to refuse pickle",
    )
    assert gravity.counters["ok"] == 0


def test_admin_task_replays_dead_letters_that_then_deliver(stack, gravity, client):
    gravity.configure(statuses=[401])
    stack.relay.enqueue([purchase(i) for i in range(5)], destinations=["gravity"])
    wait_for(lambda: len(stack.dead_letters()) == 1)
    stack.wait_settled()
    listed = client.send_task("relay.admin", args=["list"], kwargs={"reason": "http_401"}, queue="relay.admin").get(
        timeout=30
    )
    assert [e["events"] for e in listed["entries"]] == [5]

    dry = client.send_task("relay.admin", args=["replay"], kwargs={"destination": "gravity"}, queue="relay.admin").get(
        timeout=30
    )
    assert dry["dry_run"] is True and dry["entries"] == 1 and dry["done"] == 0
    done = client.send_task(
        "relay.admin", args=["replay"], kwargs={"destination": "gravity", "dry_run": False}, queue="relay.admin"
    ).get(timeout=30)
    assert done["done"] == 1
    wait_for(lambda: gravity.counters["ok"] == 5, what="replayed events")
    stack.wait_settled()
    assert stack.dead_letters() == []
    status = client.send_task("relay.admin", args=["status"], queue="relay.admin").get(timeout=30)
    assert status["gravity"]["counters"]["delivered"] == 5


def test_replayed_events_that_fail_again_return_to_the_store(stack, gravity):
    gravity.configure(statuses=[400])
    stack.relay.enqueue([purchase(i) for i in range(3)], destinations=["gravity"])
    first = wait_for(lambda: stack.dead_letters())[0]
    gravity.configure(statuses=[422])
    stack.admin.replay(Selection(ids=(first.id,)), dry_run=False)
    second = wait_for(lambda: [x for x in stack.dead_letters() if x.id != first.id])[0]
    stack.wait_settled()
    assert second.reason == "http_422"
    assert second.parts == first.parts
    assert [x.id for x in stack.dead_letters()] == [second.id]
    gravity.configure(statuses=[])
    stack.admin.replay(Selection(ids=(second.id,)), dry_run=False)
    wait_for(lambda: gravity.counters["ok"] == 3)


def test_relay_enqueue_native_task_takes_a_vendor_body(stack, gravity, client):
    body = {"data": [purchase(8)], "test_event_code": "TEST42"}
    client.send_task("relay.enqueue_native", args=["gravity", body], queue="relay.ingest")
    wait_for(lambda: gravity.counters["test_ok"] == 1, what="the native body in test mode")
    nameless = {"data": [{"event_id": "nameless"}]}
    client.send_task("relay.enqueue_native", args=["gravity", nameless], queue="relay.ingest")
    wait_for(lambda: "relay.enqueue_native" in stack.workers[0].output() and "rejected" in stack.workers[0].output())
    assert "event_name" in stack.workers[0].output()
