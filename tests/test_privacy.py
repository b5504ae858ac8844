"""No plaintext e-mail, phone or name in Redis; no API key in logs, dead letters or Sentry."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis
import sentry_sdk
from sentry_sdk.transport import Transport

from conversion_relay import EventValidationError
from tests.conftest import BROKER_DB, DATA_DB
from tests.ingest_task import ingest_for, run_enqueue_task
from tests.support import wait_for

EMAILS = [f"Jane.Doe{i}@Example.org" for i in range(40)]
PHONES = [f"+49 151 1234{i:04d}" for i in range(40)]
NAMES = [("Marguerite", f"Featherstonehaugh{i}") for i in range(40)]


def needles() -> list[bytes]:
    found = []
    for email in EMAILS:
        found += [email.encode(), email.lower().encode()]
    for phone in PHONES:
        found += [phone.encode(), phone.replace(" ", "").encode(), phone.replace(" ", "").lstrip("+").encode()]
    for first, last in NAMES:
        found += [first.encode(), first.lower().encode(), last.encode(), last.lower().encode()]
    return found


def conversions():
    return [
        {
            "event_name": "Purchase",
            "event_id": f"p-{i}",
            "user_data": {"em": [EMAILS[i]], "ph": [PHONES[i]], "fn": NAMES[i][0], "ln": NAMES[i][1]},
            "custom_data": {"value": 20.0, "currency": "EUR"},
        }
        for i in range(40)
    ]


def redis_dump(url_base: str) -> bytes:
    """Every value of every key of the broker and data databases, Celery bodies decoded."""
    chunks: list[bytes] = []
    for db in (BROKER_DB, DATA_DB):
        client = redis.Redis.from_url(f"{url_base}/{db}")
        for key in client.scan_iter(count=500):
            kind = client.type(key)
            chunks.append(key)
            if kind == b"string":
                chunks.append(client.get(key) or b"")
            elif kind == b"hash":
                chunks += [k + b"=" + v for k, v in client.hgetall(key).items()]
            elif kind == b"list":
                for item in client.lrange(key, 0, -1):
                    chunks.append(item)
                    chunks.append(_celery_body(item))
            elif kind == b"set":
                chunks += list(client.smembers(key))
            elif kind == b"zset":
                chunks += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"stream":
                for _, fields in client.xrange(key):
                    chunks += [k + b"=" + v for k, v in fields.items()]
        client.close()
    return b"\n".join(chunks)


def _celery_body(item: bytes) -> bytes:
    try:
        message = json.loads(item)
        return base64.b64decode(message["body"])
    except (ValueError, KeyError, TypeError):
        return b""


def assert_no_plaintext(blob: bytes) -> None:
    leaked = [n.decode() for n in needles() if n in blob]
    assert not leaked, f"plaintext personal data in Redis: {leaked[:5]}"


def test_no_plaintext_personal_data_in_redis_during_and_after_a_run(make_stack, gravity, redis_server):
    stack = make_stack()
    stack.start_worker()
    gravity.configure(statuses=[503, 503], event_error_prefix="p-3")
    url_base = f"redis://127.0.0.1:{redis_server.port}"
    scans = []
    for start in range(0, 40, 10):
        for event in conversions()[start : start + 10]:
            stack.relay.enqueue(event)
        scans.append(redis_dump(url_base))
    wait_for(lambda: gravity.counters["ok"] + gravity.counters["error"] == 40, what="all 40 events answered")
    stack.wait_settled()
    scans.append(redis_dump(url_base))
    for blob in scans:
        assert_no_plaintext(blob)
    # The scans did see the data: queued events during the run, dead letters after it.
    assert any(b'"em":["' in blob for blob in scans[:-1])
    assert b"cr:dlq:entry:" in scans[-1] and stack.dead_letters()


def test_api_key_stays_out_of_logs_and_dead_letters(make_stack, gravity, sandbox):
    from tests.conftest import gravity_destination

    secret = "sk_live_TOPSECRET_0123456789"
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)}, TEST_GRAVITY_KEY=secret)
    worker = stack.start_worker()
    stack.relay.enqueue(conversions()[:3])
    letter = wait_for(lambda: stack.dead_letters(), what="the 401 to be dead-lettered")[0]
    stack.wait_settled()
    assert letter.reason == "http_401"
    assert secret not in json.dumps(letter.to_json())
    assert gravity.requests[0]["auth"] == "bearer"
    log = worker.output()
    assert "dead-lettered" in log
    assert secret not in log
    assert secret not in redis_dump(
        f"redis://127.0.0.1:{stack.redis.connection_pool.connection_kwargs['port']}"
    ).decode(errors="replace")


def test_log_filter_masks_secrets_even_in_tracebacks(caplog):
    import logging

    from conversion_relay.worker.observability import SecretFilter

    secret = "sk_test_supersecret"
    logger = logging.getLogger("test.masking")
    handler = logging.StreamHandler()
    records = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(SecretFilter([secret]))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"call failed with key {secret}")
        except RuntimeError:
            logger.exception("request to https://api.example/?api_key=%s failed", secret)
    finally:
        logger.removeHandler(handler)
    [record] = records
    assert secret not in record.getMessage()
    assert "[redacted]" in record.getMessage()
    assert "RuntimeError" in record.getMessage()


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_sentry_events_carry_no_key_and_no_event_data():
    import sentry_sdk

    from conversion_relay.worker.observability import init_sentry

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "sk_live_SENTRYSECRET_42"
    try:
        assert init_sentry(
            [secret], dsn=f"http://publickey@127.0.0.1:{server.server_port}/1", default_integrations=False
        )

        def send(payload: dict[str, object]) -> None:
            raise ConnectionError(f"POST https://vendor.example/events?api_key={secret} failed")

        try:
            send({"user_data": {"em": ["jane@example.org"]}, "secret": secret})
        except ConnectionError:
            sentry_sdk.capture_exception()
        sentry_sdk.flush(timeout=5)
        wait_for(lambda: _Collector.received, timeout=10, what="Sentry's envelope")
    finally:
        sentry_sdk.get_client().close()
        server.shutdown()
    envelope = b"".join(_Collector.received)
    assert b"ConnectionError" in envelope
    assert secret.encode() not in envelope
    assert b"jane@example.org" not in envelope


# --- personal data outside the hashed fields (issue 8) -----------------------------------------


def test_personal_data_outside_the_hashed_fields_is_refused_wherever_it_arrives(make_stack, redis_server, monkeypatch):
    """A plaintext e-mail and phone number in client_context used to be stored as they came."""
    stack = make_stack()
    ingest = ingest_for(stack, monkeypatch)
    email, phone, (first, last) = EMAILS[0], PHONES[0], NAMES[0]
    cases = [
        ({"client_context": {"email": email}}, ("client_context", "email")),
        ({"client_context": {"Phone": phone}}, ("client_context", "Phone")),
        ({"client_context": {"profile": {"first_name": first, "LastName": last}}}, ("client_context", "profile")),
        ({"client_context": {"em": [email]}}, ("client_context", "em")),
        ({"client_context": {"note": f"contact: {email}"}}, ("client_context", "note")),
        ({"client_context": {email: "1"}}, ("client_context", "<key 1>")),
        ({"event_source_url": f"https://shop.example/thanks?e={quote(email)}"}, ("event_source_url",)),
        ({"custom_data": {"search_string": email}}, ("custom_data", "search_string")),
        ({"user_data": {"external_id": ["42", email]}}, ("user_data", "external_id", 1)),
        ({"page": {"data": ["shoes", email]}}, ("page", "data", 1)),
        ({"user_data": {email: "x"}}, ("user_data", "<key 1>")),
    ]
    for extra, path in cases:
        event = {"event_name": "Purchase", "event_id": "p-0", **extra}
        with pytest.raises(EventValidationError) as caught:
            stack.relay.enqueue(event)
        node = caught.value.messages
        for key in path:
            node = node[key]
        assert node, path
        shown = f"{caught.value}\n{caught.value.messages}".lower()
        assert email.lower() not in shown and quote(email).lower() not in shown and first.lower() not in shown
        result = run_enqueue_task(ingest, [event])
        assert result["accepted"] == 0 and result["errors"][0]
    url_base = f"redis://127.0.0.1:{redis_server.port}"
    assert stack.redis.xlen(stack.keys.stream("gravity")) == 0
    hashed = {"em": [email], "ph": [phone], "fn": first, "ln": last}
    stack.relay.enqueue(
        {"event_name": "Purchase", "user_data": hashed, "client_context": {"timezone": "Europe/Berlin"}}
    )
    assert stack.redis.xlen(stack.keys.stream("gravity")) == 1
    assert_no_plaintext(redis_dump(url_base))


class _Envelopes(Transport):
    """A real sentry-sdk transport that keeps each envelope as the SDK would send it."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.sent: list[bytes] = []

    def capture_envelope(self, envelope: Any) -> None:
        self.sent.append(envelope.serialize())


def capture(error: BaseException, **options: Any) -> dict[str, Any]:
    """What a web app's Sentry, at sentry-sdk's defaults (local variables included), sends for
    ``error``: the event of the one envelope."""
    transport = _Envelopes()
    client = sentry_sdk.Client(
        dsn="http://public@127.0.0.1:9/1", transport=transport, default_integrations=False, **options
    )
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            scope.capture_exception(error)
    finally:
        client.close()
    [envelope] = transport.sent
    return json.loads(envelope.split(b"\n")[2])


def relay_frames(event: dict[str, Any]) -> list[dict[str, Any]]:
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    return [f for f in frames if (f.get("module") or "").split(".")[0] == "conversion_relay"]


def test_an_uncaught_validation_error_gives_a_hosts_sentry_no_plaintext_from_the_relay(make_stack):
    """sentry-sdk records frame variables by default: enqueue's frame held the events, and the
    message repeated an unknown key, both with the plaintext e-mail address."""
    stack = make_stack()
    email = EMAILS[1]
    event = {"event_name": "Purchase", "user_data": {"em": [email], email: "x"}, "custom_data": {"currency": "EURO"}}
    try:
        stack.relay.enqueue(event)
    except EventValidationError as exc:
        error = exc
    assert email not in str(error) and email not in repr(error.messages)
    sent = capture(error)
    frames = sent["exception"]["values"][-1]["stacktrace"]["frames"]
    assert any("vars" in frame for frame in frames), "sentry-sdk collected no variables: nothing tested"
    assert relay_frames(sent), "the relay's frames are in the traceback"
    assert email.lower() not in json.dumps(relay_frames(sent)).lower()
    assert email.lower() not in sent["exception"]["values"][-1]["value"].lower()


def test_the_sentry_helper_removes_relay_frame_variables_and_every_e_mail_address(make_stack, sandbox):
    from conversion_relay.client.limits import check_event_sizes
    from conversion_relay.sentry import before_send
    from tests.conftest import gravity_destination

    stack = make_stack(destinations={"gravity": gravity_destination(sandbox, max_bytes=2000)})
    email = EMAILS[2]
    body = orjson.dumps({"event_name": "Lead", "client_context": {"note": email, "pad": "x" * 2000}})

    def broken_adapter(name: str) -> Any:
        raise RuntimeError(f"no adapter for a note of {email}")

    try:  # an unexpected error inside the relay, with plaintext in its frames' variables
        check_event_sizes(stack.settings, broken_adapter, ["gravity"], [body], False)
    except RuntimeError as exc:
        error = exc
    plain = capture(error)
    assert email.lower() in json.dumps(relay_frames(plain)).lower()  # what the helper is for
    scrubbed = capture(error, before_send=before_send)
    assert relay_frames(scrubbed) and all("vars" not in frame for frame in relay_frames(scrubbed))
    text = json.dumps(scrubbed).lower()
    assert email.lower() not in text
    assert "runtimeerror" in text and "no adapter for a note of [redacted]" in text
