"""Erasure of one person's events (``Admin.erase``), against a real Redis with data written by
the real producer, real drains (in this process, as tests/inprocess.py runs them) and the vendor
sandboxes: the person's events leave every partition's stream (unread and pending), waiting
batches and dead letters, everyone else's stay and are still delivered, and a drain holding the
person's events -- even in a request at that moment -- cannot write them back."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from conversion_relay import Relay
from conversion_relay.config.settings import settings_from_document
from conversion_relay.embedded import EmbeddedRedis
from conversion_relay.engine.drain import Drainer, DrainReport
from conversion_relay.engine.runtime import Runtime
from conversion_relay.ops.admin import Admin, InvalidSelection
from conversion_relay.schemas import pii
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.store.deadletter import DeadLetter, DeadLetterStore
from conversion_relay.store.keys import GROUP, Keys
from conversion_relay.store.lease import Leases
from conversion_relay.store.stream import PartitionStream
from conversion_relay.store.waiting import WaitingBatch, WaitingBatches
from conversion_relay.vendors import adapter_for
from conversion_relay.vendors.tracify import email_identity as tracify_email_identity
from tests.conftest import field_destination, gravity_destination, reco_destination, tracify_destination
from tests.inprocess import Recorder
from tests.support import fill_to_oom, wait_for

P_EMAIL = "anna.meyer.erase@example.com"
Q_EMAIL = "quentin.other@example.com"
P_HASH = pii.hash_email(P_EMAIL)


def purchase(event_id: str, *, email: str | None = None, phone: str | None = None, external_id: str | None = None):
    """A purchase every vendor here can express (Tracify needs the IP, user agent and URL)."""
    user: dict[str, Any] = {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0 (X11; Linux)"}
    if email:
        user["em"] = [email]
    if phone:
        user["ph"] = [phone]
    if external_id:
        user["external_id"] = [external_id]
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_source_url": "https://shop.example/thank-you",
        "user_data": user,
        "custom_data": {
            "value": 30.0,
            "currency": "EUR",
            "order_id": event_id,
            "contents": [{"id": "SKU-1", "quantity": 1, "item_price": 30.0}],
        },
    }


def drain_once(stack: Any, name: str, slot: int = 0, recorder: Recorder | None = None) -> DrainReport:
    """One real drain of a partition, under a lease of its own, until it is idle or stops."""
    rt = Runtime(stack.settings)
    if recorder is not None:
        recorder.watch(rt, name)
    token = uuid.uuid4().hex
    assert Leases(rt.redis, rt.keys).acquire(name, slot, token, 10.0)
    return Drainer(rt, name, token, slot).run()


def groups(stack: Any, *names: str) -> None:
    for name in names:
        for k in range(stack.settings.destination(name).partitions):
            PartitionStream(stack.redis, stack.keys, name, k).ensure_group()


def dump(client: redis.Redis, *, lasting: bool = False) -> bytes:
    """Every key and value of the relay's data database (streams, hashes, sets, strings); with
    ``lasting``, only keys without an expiry (a back-off or a memory reading runs out by itself)."""
    chunks: list[bytes] = []
    for key in sorted(client.scan_iter(count=1000)):
        if lasting and client.pttl(key) != -1:
            continue
        chunks.append(key)
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"hash":
            chunks += [k + b"=" + v for k, v in sorted(client.hgetall(key).items())]
        elif kind == b"zset":
            chunks += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            for entry_id, fields in client.xrange(key):
                chunks += [entry_id] + [k + b"=" + v for k, v in fields.items()]
    return b"\n".join(chunks)


def ids_in(letter_or_batch: Any) -> list[str]:
    return [
        json.loads(p).get("event_id") or json.loads(p).get("data", {}).get("order_id") for p in letter_or_batch.parts
    ]


def letters(stack: Any, destination: str) -> list[DeadLetter]:
    return stack.dead_letters(destination)


def nothing(places: tuple[str, ...] = ("stream", "waiting", "dead_letters")) -> dict[str, dict[str, int]]:
    return {place: {} for place in places}


def test_erase_by_email_removes_the_person_from_streams_waiting_batches_and_dead_letters(
    make_stack, sandbox, gravity, tracify
):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox), "tracify": tracify_destination(sandbox)})
    groups(stack, "gravity", "tracify")
    # Dead letters: the Gravity CAPI refuses a request holding P's and Q's events; Tracify P's.
    gravity.configure(statuses=[400])
    tracify.configure(statuses=[400])
    stack.relay.enqueue([purchase("p-1", email=P_EMAIL), purchase("q-1", email=Q_EMAIL)], destinations=["gravity"])
    stack.relay.enqueue([purchase("p-2", email=P_EMAIL)], destinations=["tracify"])
    drain_once(stack, "gravity")
    drain_once(stack, "tracify")
    assert [ids_in(x) for x in letters(stack, "gravity")] == [["p-1", "q-1"]]
    assert [ids_in(x) for x in letters(stack, "tracify")] == [["p-2"]]
    # A waiting batch: the Gravity CAPI answers 503 to P's and Q's next events.
    gravity.configure(statuses=[503])
    stack.relay.enqueue([purchase("p-3", email=P_EMAIL), purchase("q-2", email=Q_EMAIL)], destinations=["gravity"])
    drain_once(stack, "gravity")
    (batch,) = stack.admin.waiting.list("gravity")
    assert ids_in(batch) == ["p-3", "q-2"]
    # The streams: P's event read by a drain that then died (pending), and unread events.
    stream = stack.keys.stream("gravity")
    stack.relay.enqueue([purchase("p-4", email=P_EMAIL)], destinations=["gravity"])
    assert len(stack.redis.xreadgroup(GROUP, "0:a-dead-drain", {stream: ">"}, count=10)[0][1]) == 1
    stack.relay.enqueue([purchase("p-5", email=P_EMAIL), purchase("q-3", email=Q_EMAIL)], destinations=["gravity"])
    stack.relay.enqueue([purchase("p-6", email=P_EMAIL)], destinations=["tracify"])
    tracify_identity = tracify_email_identity(P_HASH).encode()
    before = dump(stack.redis, lasting=True)
    assert P_HASH.encode() in before and tracify_identity in before

    # The same address as the producer got it, written differently: normalised the same way.
    dry = stack.admin.erase(email="  Anna.Meyer.Erase@EXAMPLE.com ")
    expected = {
        "stream": {"gravity": 2, "tracify": 1},
        "waiting": {"gravity": 1},
        "dead_letters": {"gravity": 1, "tracify": 1},
    }
    assert dry["dry_run"] is True and dry["found"] == expected and dry["removed"] == nothing()
    assert dry["events_found"] == 6 and dry["identifiers"] == ["email"]
    assert dump(stack.redis, lasting=True) == before, "a dry run changed Redis"

    done = stack.admin.erase(email=P_EMAIL, dry_run=False, origin="test")
    assert done["found"] == done["removed"] == expected
    assert done["events_removed"] == 6 and done["held_by_drains"] == 1
    after = dump(stack.redis)
    for needle in [P_HASH.encode(), tracify_identity] + [f"p-{n}".encode() for n in range(1, 7)]:
        assert needle not in after, needle
    for kept in (b"q-1", b"q-2", b"q-3"):
        assert kept in after

    (letter,) = letters(stack, "gravity")
    assert ids_in(letter) == ["q-1"]
    assert letters(stack, "tracify") == [] and stack.admin.letters.count() == 1
    assert stack.redis.zcard(stack.keys.dlq_for("tracify")) == 0
    (batch,) = stack.admin.waiting.list("gravity")
    assert ids_in(batch) == ["q-2"]
    assert stack.admin.status()["gravity"]["waiting_events"] == 1
    assert stack.redis.xpending(stream, GROUP)["pending"] == 0
    assert [json.loads(f[b"c"])["event_id"] for _, f in stack.redis.xrange(stream)] == ["q-3"]
    assert stack.redis.xlen(stack.keys.stream("tracify")) == 0

    again = stack.admin.erase(email=P_EMAIL, dry_run=False)
    assert again["events_found"] == 0 and again["removed"] == nothing()

    # Everyone else's events are still delivered.
    gravity.configure(statuses=[])
    wait_for(lambda: not stack.redis.exists(stack.keys.pause("gravity")), what="the back-off to end")
    time.sleep(0.5)  # the waiting batch's backoff (at most backoff_cap_seconds)
    wait_for(lambda: drain_once(stack, "gravity") and stack.settled("gravity"), timeout=30, what="gravity to settle")
    assert sorted(e["event_id"] for e in gravity.events) == ["q-2", "q-3"]


def test_erase_by_phone_and_by_external_id_finds_vendor_payloads_and_request_groups(make_stack, sandbox, field, reco):
    """Gravity Field carries the user in the request envelope (the batch's group), RECO in
    ``userId``; phones are read in ``default_phone_region`` as the producer reads them."""
    stack = make_stack(
        relay={"default_phone_region": "DE"},
        destinations={"field": field_destination(sandbox), "reco": reco_destination(sandbox)},
    )
    groups(stack, "field", "reco")
    person_id = "customer-7731"
    field.configure(statuses=[503])
    stack.relay.enqueue([purchase("p-1", external_id=person_id)], destinations=["field"])
    drain_once(stack, "field")
    (batch,) = stack.admin.waiting.list("field")
    assert person_id in batch.group and person_id not in "".join(batch.parts)
    reco.configure(statuses=[400])
    stack.relay.enqueue([purchase("p-2", external_id=person_id)], destinations=["reco"])
    for slot in range(stack.settings.destination("reco").partitions):
        drain_once(stack, "reco", slot)
    (letter,) = letters(stack, "reco")
    assert person_id in letter.parts[0]
    stack.relay.enqueue([purchase("p-3", phone="0151 12345678"), purchase("q-1", phone="0151 99999999")])
    stack.relay.enqueue([purchase("q-2", external_id="customer-1")])
    phone_hash = pii.hash_phone("+4915112345678").encode()

    by_phone = stack.admin.erase(phone="+49 151 1234 5678", dry_run=False)
    assert by_phone["removed"] == {"stream": {"field": 1, "reco": 1}, "waiting": {}, "dead_letters": {}}
    assert phone_hash not in dump(stack.redis)

    by_id = stack.admin.erase(external_id=f" {person_id} ", dry_run=False)
    assert by_id["removed"] == {"stream": {}, "waiting": {"field": 1}, "dead_letters": {"reco": 1}}
    after = dump(stack.redis)
    assert person_id.encode() not in after and b"p-" not in after
    assert b"q-1" in after and b"customer-1" in after
    assert stack.admin.waiting.count("field") == 0 and stack.admin.letters.count() == 0


def test_a_drain_holding_the_persons_event_in_a_request_cannot_write_it_back(make_stack, gravity):
    """The event is in a request when the erase runs; the vendor then answers 503, which would
    park it as a waiting batch.  The erase fenced the drain: nothing of the person returns to
    Redis, and the other event of that request is delivered by the next drain."""
    stack = make_stack()
    groups(stack, "gravity")
    stack.relay.enqueue([purchase("p-1", email=P_EMAIL), purchase("q-1", email=Q_EMAIL)], destinations=["gravity"])
    gravity.configure(latency_seconds=1.5, statuses=[503])
    recorder = Recorder()
    reports: list[DrainReport] = []
    thread = threading.Thread(target=lambda: reports.append(drain_once(stack, "gravity", recorder=recorder)))
    thread.start()
    wait_for(lambda: gravity.in_flight == 1, timeout=10, what="the request to be in flight")

    result = stack.admin.erase(email=P_EMAIL, dry_run=False)
    assert result["removed"]["stream"] == {"gravity": 1}
    assert result["held_by_drains"] == 1 and result["drains_stopped"] == 1
    thread.join(30)
    assert reports[0].stopped == "lease_lost"
    assert stack.admin.waiting.count("gravity") == 0 and stack.admin.letters.count() == 0
    assert P_HASH.encode() not in dump(stack.redis) and b"p-1" not in dump(stack.redis)
    assert [r.ids for r in recorder.sent()] == [["p-1", "q-1"]]

    gravity.configure(latency_seconds=0.0, statuses=[])
    wait_for(lambda: drain_once(stack, "gravity", recorder=recorder) and stack.settled(), what="q-1 to be delivered")
    assert [e["event_id"] for e in gravity.events] == ["q-1"]
    assert [r.ids for r in recorder.sent()] == [["p-1", "q-1"], ["q-1"]]


def test_a_waiting_batch_claimed_by_a_drain_in_a_request_is_rewritten_and_the_drain_fenced(make_stack, gravity):
    stack = make_stack()
    groups(stack, "gravity")
    gravity.configure(statuses=[503])
    stack.relay.enqueue([purchase("p-1", email=P_EMAIL), purchase("q-1", email=Q_EMAIL)], destinations=["gravity"])
    drain_once(stack, "gravity")
    assert stack.admin.waiting.count("gravity") == 1
    gravity.configure(latency_seconds=1.5, statuses=[503])
    wait_for(lambda: not stack.redis.exists(stack.keys.pause("gravity")), what="the back-off to end")
    time.sleep(0.5)
    recorder = Recorder()
    reports: list[DrainReport] = []
    thread = threading.Thread(target=lambda: reports.append(drain_once(stack, "gravity", recorder=recorder)))
    thread.start()
    wait_for(lambda: gravity.in_flight == 1, timeout=10, what="the waiting batch's request to be in flight")

    result = stack.admin.erase(email=P_EMAIL, dry_run=False)
    assert result["removed"] == {"stream": {}, "waiting": {"gravity": 1}, "dead_letters": {}}
    assert result["drains_stopped"] >= 1
    thread.join(30)
    assert reports[0].stopped == "lease_lost"
    (batch,) = stack.admin.waiting.list("gravity")
    assert ids_in(batch) == ["q-1"]
    assert P_HASH.encode() not in dump(stack.redis)

    gravity.configure(latency_seconds=0.0, statuses=[])
    wait_for(
        lambda: drain_once(stack, "gravity") and stack.settled(),
        timeout=30,
        what="the rewritten batch to be sent once its claim ran out",
    )
    assert [e["event_id"] for e in gravity.events] == ["q-1"]


def test_erase_refuses_a_request_without_a_readable_identifier(make_stack):
    stack = make_stack()
    with pytest.raises(InvalidSelection, match="give the person's email, phone or external_id"):
        stack.admin.erase(dry_run=False)
    with pytest.raises(InvalidSelection, match=r"^email: Not an e-mail address") as raised:
        stack.admin.erase(email="not-an-address")
    assert "not-an-address" not in str(raised.value)
    with pytest.raises(InvalidSelection, match=r"^phone: "):
        stack.admin.erase(phone="12")
    with pytest.raises(InvalidSelection, match=r"^external_id: "):
        stack.admin.erase(external_id="   ")
    with pytest.raises(InvalidSelection, match=r"^origin: "):
        stack.admin.erase(email=P_EMAIL, origin="x" * 200)


def test_erase_and_retention_work_at_maxmemory(tmp_path):
    server = EmbeddedRedis(databases=2, extra=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"))
    try:
        env = {"REDIS_URL": server.url(0), "TEST_GRAVITY_KEY": "k"}
        table = {"vendor": "gravity_capi", "base_url": "http://127.0.0.1:9", "api_key_env": "TEST_GRAVITY_KEY"}
        settings = settings_from_document({"destinations": {"gravity": table}}, env)
        client = redis.Redis.from_url(server.url(0))
        keys = Keys(settings.key_prefix)
        with Relay(settings) as relay:
            relay.enqueue([purchase("p-1", email=P_EMAIL), purchase("q-1", email=Q_EMAIL)])
        adapter, load = adapter_for(settings.destination("gravity")), canonical_schema().load
        parts = [
            adapter.map_event(load(purchase(i, email=e)))[0].body.decode()
            for i, e in (("p-2", P_EMAIL), ("q-2", Q_EMAIL))
        ]
        pipe = client.pipeline()
        WaitingBatches(client, keys).park(pipe, WaitingBatch("gravity", "", parts, 1, 1.0, 1.0, 1.0))
        store = DeadLetterStore(client, keys)
        store.add(pipe, DeadLetter("gravity", "gravity_capi", "", parts, "http_400", 400, "", 1, 1.0, 1.0))
        old = DeadLetter("gravity", "gravity_capi", "", parts[1:], "http_400", 400, "", 1, 1.0, 2.0)
        store.add(pipe, old)
        pipe.execute()
        fill_to_oom(client)
        result = Admin(settings, client).erase(email=P_EMAIL, dry_run=False)
        assert result["events_removed"] == 3
        assert P_HASH.encode() not in dump(client)
        fill_to_oom(client)
        assert store.prune(older_than=10.0) == 2
        assert client.zcard(keys.dlq) == 0 and client.zcard(keys.dlq_for("gravity")) == 0
        client.close()
    finally:
        server.stop()
