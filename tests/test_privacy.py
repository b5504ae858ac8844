"""No plaintext e-mail, phone or name in Redis; no API key in logs, dead letters or Sentry."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

from tests.conftest import BROKER_DB, DATA_DB
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

    from worker.observability import SecretFilter

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

    from worker.observability import init_sentry

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
