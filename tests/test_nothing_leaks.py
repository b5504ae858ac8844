"""Nothing the relay writes holds an API key or a person's plaintext e-mail, phone or name.

One run through real parts -- Celery worker processes, the private redis-server, the four vendor
sandboxes on loopback with keys of their own, a loopback Sentry that records the workers'
envelopes -- puts the keys and three people's plaintext data everywhere a producer can:

* person A through ``Relay.enqueue``, person B through the ``relay.enqueue`` task, both in
  every hashed field (``em``, ``ph``, ``fn``, ``ln``, in several spellings);
* person C where the producer must refuse them (top-level and ``user_data`` keys,
  ``client_context`` keys, free text, URLs, ``external_id``, ``page.data``, values ``em``/``ph``
  cannot read, extra task arguments, a raw broker message that is not protocol 2): every call
  raises ``EventValidationError`` or the task refuses it;
* vendors that answer 400, 401 and 503 for good, echoing the keys, e-mail and phone back, so
  every kind of dead letter exists; then the command line (``status``, ``check-config``,
  ``dlq list/show/export``, ``erase``) and the ``relay.admin`` task (``list``, ``show``,
  ``status``, ``erase``) read them.

Then it greps everything written -- a SCAN of every Redis database in use (Celery message bodies
decoded), the worker's log, the command line's output, the dead letters (store and export), the
admin results as the result backend holds them, every Sentry envelope, and what a host app's
Sentry would get for each refusal -- for each key and each plaintext value in its case and
formatting variants, and finds none.  Before that it checks that its own grep finds a value it
plants, in plain and in a base64 Celery body, so a clean result means something.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import redis
from celery import Celery

from conversion_relay import EventValidationError
from conversion_relay.sandbox import (
    GravityCapiSandbox,
    GravityFieldSandbox,
    GravityRecoSandbox,
    SandboxServer,
    TracifySandbox,
)
from conversion_relay.store.deadletter import Selection
from tests.conftest import (
    BROKER_DB,
    DATA_DB,
    field_destination,
    gravity_destination,
    reco_destination,
    tracify_destination,
)
from tests.support import wait_for
from tests.test_privacy import _Collector, capture, redis_dump

# --- what must not show up --------------------------------------------------------------------

#: One API key per vendor, each in its own environment variable, in shapes vendors use: some
#: look like keys to conversion_relay/masking.py (a prefix, a long mixed run), some do not (a UUID, a
#: password), so only the configured-secret protections can keep those out.
KEYS = {
    "gravity": ("LEAKTEST_GRAVITY_KEY", "sk_live_LeakGravity7731Capi"),
    "field": ("LEAKTEST_FIELD_KEY", "5f0c2a8e-1b7d-4c3e-9a6f-2d8e7b1c4a90"),
    "tracify": ("LEAKTEST_TRACIFY_KEY", "TrcfyTok3nQx7Lm2Np9Rs4Vw8Yz"),
    "reco": ("LEAKTEST_RECO_KEY", "reco-Pass-Wombat-4417"),
}
RECO_USER = "sandbox"


@dataclass(frozen=True)
class Person:
    email: str
    phone: str  # international, with spaces
    phone_national: str  # as dialled in Germany (relay.default_phone_region = "DE")
    national_number: str  # the digits after the country code: in every spelling of the number
    first: str
    last: str


A = Person("Zelda.Quixote-7731@Leaktest-Shop.example", "+49 1523 7784193", "01523 7784193", "15237784193",
           "Wilhelmina", "Throckmorton")  # fmt: skip
B = Person("Ottoline.Brackenbury@Leaktest-Mail.example", "+49 176 2958 4471", "0176 29584471", "17629584471",
           "Peregrine", "Fotheringay")  # fmt: skip
C = Person("Isambard.Kingdom88@Refused-Leak.example", "+33 6 48 27 19 53", "+33 648271953", "648271953",
           "Clementine", "Vavasour")  # fmt: skip
#: Planted by the test itself, in Redis only, to show that the grep of the dump finds a value.
P = Person("Planted.Needle@Leaktest-Probe.example", "+43 664 1234567", "+43 6641234567", "6641234567",
           "Hieronymus", "Wolkenstein")  # fmt: skip
PEOPLE = {"A (Relay.enqueue)": A, "B (relay.enqueue task)": B, "C (refused calls)": C, "P (planted)": P}

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"


def needles() -> dict[bytes, str]:
    """Every spelling of every secret and plaintext value -> what it is."""
    found: dict[bytes, str] = {}

    def add(value: str, what: str) -> None:
        for variant in {value, value.lower(), value.upper(), value.title(), quote(value), quote_plus(value)}:
            found[variant.encode()] = what

    for name, (_, key) in KEYS.items():
        add(key, f"the {name} API key")
    reco_basic = base64.b64encode(f"{RECO_USER}:{KEYS['reco'][1]}".encode()).decode()
    found[reco_basic.encode()] = "the reco API key (Basic credentials)"
    for who, person in PEOPLE.items():
        add(person.email, f"{who}'s e-mail address")
        compact = person.phone.replace(" ", "")
        for phone in (person.phone, compact, compact.lstrip("+"), "00" + compact.lstrip("+"), person.phone_national):
            add(phone, f"{who}'s phone number")
        found[person.national_number.encode()] = f"{who}'s phone number"
        add(person.first, f"{who}'s first name")
        add(person.last, f"{who}'s last name")
        add(f"{person.first} {person.last}", f"{who}'s name")
    return found


def base64_cores(needle: bytes) -> list[bytes]:
    """The base64 characters that spell ``needle`` wherever it starts in an encoded text (one
    form per alignment), without the characters that depend on its neighbours."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + needle)
        start, end = -(-offset * 8 // 6), (offset + len(needle)) * 8 // 6
        cores.append(encoded[start:end])
    return cores


def needles_with_base64() -> dict[bytes, str]:
    found = dict(needles())
    for needle, what in list(found.items()):
        for core in base64_cores(needle):
            found.setdefault(core, f"{what}, base64-encoded")
    return found


def leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    hits = sorted({f"{what} ({needle.decode()!r})" for needle, what in needles_with_base64().items() if needle in data})
    return hits


# --- events -----------------------------------------------------------------------------------


def accepted_events(person: Person, prefix: str) -> list[dict[str, Any]]:
    """The person's plaintext in every field the producer hashes, in several spellings; one
    event per spelling set.  ``rej-`` event ids are refused by Gravity inside a 200."""
    common = {
        "external_id": [f"{prefix}-customer-1"],
        "client_ip_address": "203.0.113.7",
        "client_user_agent": UA,
        "visitor_id": f"{prefix}-visitor",
        "session_id": f"{prefix}-session",
    }
    return [
        {
            "event_name": "Purchase",
            "event_id": f"{prefix}-order-1",
            "event_source_url": "https://shop.example/checkout/thank-you",
            "user_data": {
                "em": [person.email, f"  {person.email.upper()} "],
                "ph": [person.phone, person.phone_national],
                "fn": person.first,
                "ln": person.last,
                **common,
            },
            "custom_data": {
                "value": 42.5,
                "currency": "EUR",
                "order_id": f"{prefix}-1",
                "contents": [{"id": "SKU-1001", "quantity": 1, "item_price": 42.5}],
            },
            "client_context": {"timezone": "Europe/Berlin", "screen": {"width": 1280, "height": 800}},
        },
        {
            "event_name": "Lead",
            "event_id": f"rej-{prefix}-lead",
            "user_data": {
                "em": person.email.lower(),
                "ph": person.phone.replace(" ", ""),
                "fn": f" {person.first.upper()} ",
                "ln": person.last.lower(),
                **common,
            },
        },
        {
            "event_name": "AddToCart",
            "event_id": f"{prefix}-cart-1",
            "user_data": {
                "em": [person.email.title()],
                "fn": person.first.lower(),
                "ln": person.last.upper(),
                **common,
            },
            "custom_data": {"value": 9.0, "currency": "EUR", "contents": [{"id": "SKU-2002", "quantity": 2}]},
        },
    ]


def refused_events(person: Person) -> list[dict[str, Any]]:
    """Person C's data where the producer must refuse it."""
    email, phone, first, last = person.email, person.phone, person.first, person.last
    base = {"event_name": "Purchase", "event_id": "refused-1"}
    extras: list[dict[str, Any]] = [
        {"email": email},
        {"phone": phone, "first_name": first, "last_name": last},
        {"user_data": {"email": email}},
        {"user_data": {email: "1"}},
        {"user_data": {"external_id": ["42", email]}},
        {"user_data": {"visitor_id": email}},
        {"user_data": {"client_user_agent": f"Mozilla/5.0 ({email})"}},
        {"user_data": {"em": [f"{first} {last} <{email}>"]}},
        {"user_data": {"em": [f"{first}.{last}"]}},
        {"user_data": {"ph": [f"{phone} 99999999999"]}},
        {"user_data": {"ph": [f"{first} {last}"]}},
        {"client_context": {"email": email}},
        {"client_context": {"Phone": phone}},
        {"client_context": {"profile": {"first_name": first, "LastName": last, "E-Mail": email}}},
        {"client_context": {"note": f"contact: {email}"}},
        {"client_context": {email: "1"}},
        {"event_source_url": f"https://shop.example/thanks?email={quote(email)}"},
        {"event_source_url": f"https://shop.example/thanks?email={email}"},
        {"custom_data": {"search_string": email, "currency": "EUR"}},
        {"custom_data": {"content_name": f"gift for {email}"}},
        {"page": {"data": ["shoes", email], "location": f"https://shop.example/?e={email}"}},
        {"test_event_code": email},
        {"event_id": email},
    ]
    return [{**base, **extra} for extra in extras]


# --- real parts the test adds -----------------------------------------------------------------


class _SentryEnvelopes(_Collector):
    """test_privacy's loopback Sentry (gzip decoded), with a list of its own."""

    received: list[bytes] = []


def sandboxes() -> SandboxServer:
    """The four vendor sandboxes, each accepting only its leak-test key."""
    return SandboxServer(
        {
            "gravity-capi": GravityCapiSandbox(api_keys={KEYS["gravity"][1]}),
            "gravity-field": GravityFieldSandbox(api_keys={KEYS["field"][1]}),
            "tracify": TracifySandbox(api_keys={KEYS["tracify"][1]}),
            "gravity-reco": GravityRecoSandbox(credentials={RECO_USER: KEYS["reco"][1]}),
        }
    ).start()


def echo(person: Person, key: str, what: str) -> str:
    """A vendor answer that repeats the key and the person's e-mail and phone, as vendors do
    (names are not in it: the relay never sends a plaintext name, so no vendor can echo one,
    and names in free text cannot be recognised -- docs/producer.md)."""
    return json.dumps(
        {
            "error": f"{what}: key {key} may not send for {person.email}",
            "detail": f"phone {person.phone} / {person.phone.replace(' ', '')} refused; api_key={key}",
            "received_headers": {"Authorization": f"Bearer {key}"},
        }
    )


def raw_message(body: str) -> bytes:
    """A message on relay.ingest that is not a protocol 2 body, as a careless client sends it."""
    task_id = str(uuid.uuid4())
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": "relay.enqueue", "id": task_id, "root_id": task_id, "retries": 0},
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "priority": 0,
                "body_encoding": "base64",
                "delivery_info": {"exchange": "relay.ingest", "routing_key": "relay.ingest"},
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def hidden_bodies(url_base: str) -> bytes:
    """Celery messages inside hash values (kombu's ``unacked``: ``[message, exchange, key]``),
    which redis_dump shows only base64-encoded."""
    chunks = []
    for db in (BROKER_DB, DATA_DB):
        client = redis.Redis.from_url(f"{url_base}/{db}")
        for key in client.scan_iter(count=500):
            if client.type(key) != b"hash":
                continue
            for value in client.hvals(key):
                try:
                    decoded = json.loads(value)
                except ValueError:
                    continue
                messages = decoded if isinstance(decoded, list) else [decoded]
                for message in messages:
                    if isinstance(message, dict) and isinstance(message.get("body"), str):
                        try:
                            chunks.append(base64.b64decode(message["body"]))
                        except ValueError:
                            pass
        client.close()
    return b"\n".join(chunks)


def full_dump(server_port: int) -> bytes:
    url_base = f"redis://127.0.0.1:{server_port}"
    return redis_dump(url_base) + b"\n" + hidden_bodies(url_base)


def without_foreign_frames(sent: dict[str, Any]) -> dict[str, Any]:
    """A host app's Sentry event without the app's own frames (the test's, pytest's): what the
    relay put in it.  The app's frames hold the app's events; keeping them out is the app's
    before_send (docs/producer.md, "Sentry")."""
    for value in sent.get("exception", {}).get("values", []):
        frames = (value.get("stacktrace") or {}).get("frames") or []
        value.setdefault("stacktrace", {})["frames"] = [
            f
            for f in frames
            if (f.get("module") or "").split(".")[0] in ("conversion_relay", "schemas", "worker", "tasks")
        ]
    return sent


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "conversion_relay.cli", *args], env=env, capture_output=True, timeout=60, check=False
    )
    # Not the command line itself: erase takes the person's address as an argument.
    return done.returncode, f"{done.stdout.decode()}{done.stderr.decode()}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- the run ----------------------------------------------------------------------------------


@pytest.fixture
def sentry_server():
    _SentryEnvelopes.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SentryEnvelopes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def vendors():
    server = sandboxes()
    yield server
    for prefix in ("gravity-capi", "gravity-field", "tracify", "gravity-reco"):
        vendor = server.vendor(prefix)
        wait_for(lambda v=vendor: v.in_flight == 0, timeout=15, what="the sandbox to finish its requests")
    server.stop()


def test_no_key_and_no_plaintext_personal_data_anywhere_the_relay_writes(
    make_stack, redis_server, vendors, sentry_server, caplog, tmp_path
):
    stack = make_stack(
        relay={"retry_horizon_seconds": 1.5, "default_phone_region": "DE"},
        destinations={
            "gravity": gravity_destination(vendors, api_key_env=KEYS["gravity"][0]),
            "field": field_destination(vendors, api_key_env=KEYS["field"][0]),
            "tracify": tracify_destination(vendors, api_key_env=KEYS["tracify"][0]),
            "reco": reco_destination(vendors, api_key_env=KEYS["reco"][0], username=RECO_USER),
        },
        **{env: key for env, key in KEYS.values()},
    )
    assert sorted(stack.settings.secrets) == sorted(key for _, key in KEYS.values())
    # conftest's Stack drops SENTRY_DSN from the environment it builds; the workers get ours.
    stack.env["SENTRY_DSN"] = f"http://publickey@127.0.0.1:{sentry_server.server_port}/1"
    gravity, field = vendors.vendor("gravity-capi"), vendors.vendor("gravity-field")
    tracify, reco = vendors.vendor("tracify"), vendors.vendor("gravity-reco")
    # Every vendor refuses for good at first (Tracify: until the retry horizon), echoing back.
    gravity.configure(statuses=[{"status": 400, "body": echo(A, KEYS["gravity"][1], "invalid parameter")}])
    field.configure(statuses=[{"status": 401, "body": echo(A, KEYS["field"][1], "unauthorized")}])
    reco.configure(
        # RECO splits a refused request down to single events: two events take three answers.
        statuses=[{"status": 400, "body": echo(A, KEYS["reco"][1], "bad request"), "content_type": "text/plain"}] * 3
    )
    tracify.configure(
        statuses=[{"status": 503, "body": echo(A, KEYS["tracify"][1], "unavailable")}] * 500, fail_all_status=503
    )
    worker = stack.start_worker()
    outputs: dict[str, str] = {}  # source -> text to grep

    # Person A through the Python producer; person C where it must refuse.
    producer_refusals = []
    with caplog.at_level("DEBUG"):
        stack.relay.enqueue(accepted_events(A, "a"))
        for n, event in enumerate(refused_events(C)):
            with pytest.raises(EventValidationError) as caught:
                stack.relay.enqueue(event)
            error = caught.value
            producer_refusals.append(f"{error}\n{error.messages!r}\n{error.args!r}")
            outputs[f"a host app's Sentry event for refused event {n}"] = json.dumps(
                without_foreign_frames(capture(error))
            )
        with pytest.raises(EventValidationError) as caught:  # one bad event in a list: refused whole
            stack.relay.enqueue([accepted_events(C, "c")[0], *refused_events(C)[:3]])
        producer_refusals.append(f"{caught.value}\n{caught.value.messages!r}")
    outputs["producer refusals (message, messages)"] = "\n".join(producer_refusals)
    expected = {("gravity", "http_400"), ("field", "http_401"), ("reco", "http_400"), ("tracify", "retries_exhausted")}
    try:
        wait_for(lambda: {(d.destination, d.reason) for d in stack.dead_letters()} >= expected, timeout=30)
    except AssertionError:
        got = {(d.destination, d.reason) for d in stack.dead_letters()}
        raise AssertionError(f"dead letters {got}, expected {expected}:\n{worker.output()[-4000:]}") from None

    # Person B through the relay.enqueue task; person C in calls the task must refuse.
    gravity.configure(event_error_prefix="rej-")
    client = Celery(broker=stack.env["CONVERSION_RELAY_BROKER_URL"], backend=stack.settings.redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    try:
        client.send_task("relay.enqueue", args=[accepted_events(B, "b")], queue="relay.ingest")
        refused_calls: list[tuple[list[Any], dict[str, Any]]] = [([event], {}) for event in refused_events(C)]
        refused_calls += [
            ([[accepted_events(C, "c")[0], refused_events(C)[0]]], {}),
            ([accepted_events(C, "c")[:1]], {"email": C.email}),
            ([accepted_events(C, "c")[:1], None, C.email], {}),
        ]
        for args, kwargs in refused_calls:
            client.send_task("relay.enqueue", args=args, kwargs=kwargs, queue="relay.ingest")
        broker = redis.Redis.from_url(stack.env["CONVERSION_RELAY_BROKER_URL"])
        # Not a protocol 2 body: the worker's guard drops it.
        broker.lpush("relay.ingest", raw_message(json.dumps({"events": accepted_events(C, "c"), "email": C.email})))
        broker.close()
        wait_for(
            lambda: (
                worker.output().count(" rejected: ") >= len(refused_calls) and "refused and dropped" in worker.output()
            ),
            timeout=30,
            what="the worker to refuse every bad call",
        )
        wait_for(lambda: any(e.get("event_id") == "b-order-1" for e in gravity.events), what="person B's purchase")
        for name in stack.settings.destinations:
            stack.wait_settled(name, timeout=30)
        letters = stack.dead_letters()
        reasons = {(d.destination, d.reason) for d in letters}
        assert ("gravity", "vendor_rejected_event") in reasons, reasons

        # The relay.admin task, results read back from the result backend before they expire.
        admin_results = []
        calls = [
            ("list", {}),
            ("list", {"destination": "tracify"}),
            ("status", {}),
            ("erase", {"email": A.email, "phone": A.phone}),
            ("erase", {"email": sha256(B.email.lower())}),
            ("show", {"id": "no-such-letter"}),
        ]
        calls += [("show", {"id": d.id}) for d in letters] + [("show", {"id": letters[0].id, "events": True})]
        for action, kwargs in calls:
            result = client.send_task("relay.admin", args=[action], kwargs=kwargs, queue="relay.admin")
            value = result.get(timeout=30)
            stored = stack.redis.get(f"celery-task-meta-{result.id}")
            assert stored, f"relay.admin {action}: no result in the backend"
            admin_results.append(f"{action} {json.dumps(value)}\n{stored.decode()}")
        outputs["relay.admin results (task and result backend)"] = "\n".join(admin_results)
        assert any('"entries": [{' in r for r in admin_results)
    finally:
        client.close()

    # The command line, as an operator runs it.
    export_file = tmp_path / "letters.jsonl"
    runs = [
        ("status",),
        ("status", "--json"),
        ("check-config",),
        ("check-config", "--json"),
        ("dlq", "list"),
        ("dlq", "list", "--destination", "field"),
        ("dlq", "export"),
        ("dlq", "export", "-o", str(export_file)),
        ("dlq", "replay", "--reason", "http_401"),
        ("erase", "--email", A.email, "--phone", A.phone),
        *[("dlq", "show", d.id) for d in letters],
    ]
    for args in runs:
        code, text = cli(stack.env, *args)
        assert code in (0, 1), text
        outputs[f"CLI {' '.join(args[:2])}"] = outputs.get(f"CLI {' '.join(args[:2])}", "") + text
    outputs["CLI dlq export -o (file)"] = export_file.read_text()
    assert letters[0].id in outputs["CLI dlq export -o (file)"]

    # The dead letters as the store and Admin give them.
    exported = io.StringIO()
    stack.admin.export(Selection(), exported)
    outputs["dead letters (export)"] = exported.getvalue()
    outputs["dead letters (store)"] = "\n".join(
        json.dumps(d.to_json()) + json.dumps(d.to_redis()) + json.dumps(stack.admin.show(d.id, events=False))
        for d in stack.dead_letters()
    )

    # The workers' Sentry: dead-lettering logs an error, which is an event.
    wait_for(
        lambda: any(b"dead-lettered" in e for e in _SentryEnvelopes.received), timeout=20, what="the worker's Sentry"
    )
    worker.stop()  # its last lines and envelopes are in too

    # Redis: a full SCAN of every database in use, after checking the grep finds what it should.
    port = redis_server.port
    assert all(db in (f"db{BROKER_DB}", f"db{DATA_DB}") for db in stack.redis.info("keyspace")), (
        f"the relay uses a database the dump does not read: {stack.redis.info('keyspace')}"
    )
    planted = {"plain": P.email, "celery": raw_message(json.dumps([[{"em": [P.phone]}], {}, {}])).decode()}
    stack.redis.hset("leaktest:planted", mapping=planted)
    try:
        probe = leaks(full_dump(port))
        assert any("P (planted)'s e-mail" in hit for hit in probe), probe
        assert any("P (planted)'s phone" in hit for hit in probe), probe
    finally:
        stack.redis.delete("leaktest:planted")
    dump = full_dump(port)
    assert b"cr:dlq:entry:" in dump and b"celery-task-meta-" in dump and b"_kombu.binding." in dump
    outputs["Redis (SCAN of the broker and data databases)"] = dump.decode(errors="replace")

    outputs["worker log"] = worker.output()
    assert "dead-lettered" in outputs["worker log"] and "refused and dropped" in outputs["worker log"]
    outputs["producer log (caplog)"] = caplog.text
    envelopes = b"\n".join(_SentryEnvelopes.received)
    assert b'"level":"error"' in envelopes or b'"level": "error"' in envelopes
    outputs["worker Sentry envelopes"] = envelopes.decode(errors="replace")

    # The run carried the data: A's digest is in the dead letters, B's reached Gravity.
    assert sha256(A.email.lower()) in outputs["dead letters (export)"]
    assert sha256(B.email.lower()) in json.dumps(gravity.events)

    found = {source: hits for source, text in outputs.items() if (hits := leaks(text))}
    kept = tmp_path / "grepped.json"  # what was searched, to look into a failure
    kept.write_text(json.dumps(outputs, indent=1))
    assert not found, f"leaked (everything searched is in {kept}):\n" + "\n".join(
        f"- in {source}: {', '.join(hits)}" for source, hits in found.items()
    )


def test_the_grep_finds_every_spelling_it_looks_for():
    """The needles cover the spellings a leak would take (the planted values above cover the
    places): e-mail in any case and percent-encoded, phones with and without spaces and plus,
    in national form, names in any case, keys and RECO's Basic credentials."""
    reco = base64.b64encode(f"{RECO_USER}:{KEYS['reco'][1]}".encode()).decode()
    for text in (
        A.email.lower(),
        quote(B.email),
        "4915237784193",
        "0176 29584471",
        "0033648271953",
        "WILHELMINA",
        "fotheringay",
        f"Authorization: Basic {reco}",
        f"token={KEYS['field'][1]}",
        KEYS["tracify"][1].lower(),
    ):
        assert leaks(f"...{text}..."), text
    assert leaks(base64.b64encode(json.dumps({"x": 1, "user_data": {"fn": B.first}}).encode()))
    assert leaks(base64.b64encode(f"{RECO_USER}:{KEYS['reco'][1]}".encode()))
    assert not leaks("Purchase em ph fn ln [email] [phone] [redacted] 203.0.113.7 " + sha256(A.email.lower()))
