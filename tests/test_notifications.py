"""Dead-letter notices: one webhook POST per destination and reason an interval, counts only.

A real worker dead-letters at the Gravity sandbox (401: a permanent failure) and posts to a
receiver on loopback; the receiver records every body and header it was sent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conversion_relay.config.rules import require_api_keys
from conversion_relay.config.settings import settings_from_document
from conversion_relay.errors import ConfigurationError
from conversion_relay.store.keys import Keys
from conversion_relay.store.notices import NoticeCounts
from tests.conftest import gravity_destination
from tests.support import wait_for

TOKEN = "notice-token-0f9e8d7c"
IP = "203.0.113.77"


class Receiver:
    """A webhook (or a Sentry ingest) on loopback that records what it was sent and answers
    ``status``.  Sentry envelopes are recorded decompressed, as ``envelopes``."""

    def __init__(self) -> None:
        self.envelopes: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if "envelope" in self.path:
                    encoded = self.headers.get("Content-Encoding", "")
                    receiver.envelopes.append((gzip.decompress(raw) if encoded == "gzip" else raw).decode())
                    self.send_response(200)
                    self.end_headers()
                    return
                receiver.raw.append(raw)
                receiver.headers.append(dict(self.headers))
                receiver.bodies.append(json.loads(raw))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/relay-secret-path"

    def notices(self, destination: str, reason: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["destination"] == destination and b["reason"] == reason]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def event(i: int, run: str = "a") -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": f"notice-{run}-{i}",
        "user_data": {"em": [f"notice{i}@example.com"], "client_ip_address": IP},
        "custom_data": {"value": 10.0 + i, "currency": "EUR"},
    }


def personal(i: int, run: str = "a") -> list[str]:
    """What of event ``i`` must never reach a notice: its id, its e-mail (plain or hashed), the IP."""
    email = f"notice{i}@example.com"
    return [f"notice-{run}-{i}", email, hashlib.sha256(email.encode()).hexdigest(), IP]


def reported(stack: Any, receiver: Receiver, destination: str, reason: str) -> int:
    """Events in notices so far plus those counted and waiting for the next notice."""
    pending = NoticeCounts(stack.redis, stack.keys).pending(destination).get(reason, 0)
    return sum(b["count"] for b in receiver.notices(destination, reason)) + pending


def notify_relay(url: str, interval: float, **more: Any) -> dict[str, Any]:
    return {"notify_webhook_url": url, "notify_interval_seconds": interval, **more}


def test_one_notice_per_destination_and_reason_an_interval(make_stack, sandbox, gravity, receiver):
    stack = make_stack(
        relay=notify_relay(receiver.url, 60.0, notify_webhook_token_env="TEST_NOTICE_TOKEN"),
        destinations={"gravity": gravity_destination(sandbox), "small": gravity_destination(sandbox, max_events=5)},
        TEST_NOTICE_TOKEN=TOKEN,
    )
    gravity.configure(fail_all_status=401)
    worker = stack.start_worker()
    stack.relay.enqueue([event(i) for i in range(20)], destinations=["gravity", "small"])

    for name in ("gravity", "small"):
        wait_for(lambda name=name: stack.counters(name)["dead_lettered"] == 20, what=f"{name}: 20 dead-lettered")
        wait_for(lambda name=name: reported(stack, receiver, name, "http_401") == 20, what=f"{name}: 20 counted")
    wait_for(lambda: len(receiver.bodies) >= 2, what="a notice per destination")

    assert len(receiver.notices("gravity", "http_401")) == 1
    small = receiver.notices("small", "http_401")
    assert len(small) == 1, "four dead letters of small, one notice within the interval"
    assert len(receiver.bodies) == 2
    for body in receiver.bodies:
        assert set(body) == {"destination", "reason", "count", "letters", "since", "until", "relay"}
        assert 1 <= body["count"] <= 20 and 1 <= body["letters"] <= body["count"]
        assert body["since"] <= body["until"]
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for h in receiver.headers)
    sent = b"".join(receiver.raw).decode()
    for i in range(20):
        for text in personal(i):
            assert text not in sent
    output = worker.output()
    assert TOKEN not in output and "relay-secret-path" not in output


def test_another_notice_after_the_interval(make_stack, gravity, receiver):
    stack = make_stack(relay=notify_relay(receiver.url, 1.0))
    gravity.configure(fail_all_status=401)
    stack.start_worker()
    gate = Keys(stack.settings.key_prefix).notice_gate("gravity", "http_401")

    stack.relay.enqueue([event(i, "a") for i in range(3)], destinations=["gravity"])
    wait_for(lambda: receiver.notices("gravity", "http_401"), what="the first notice")
    stack.wait_settled()
    wait_for(lambda: not stack.redis.exists(gate), what="the interval to end")
    stack.relay.enqueue([event(i, "b") for i in range(4)], destinations=["gravity"])
    wait_for(lambda: len(receiver.notices("gravity", "http_401")) >= 2, what="a second notice")
    wait_for(lambda: reported(stack, receiver, "gravity", "http_401") == 7, what="7 events counted")

    first, second = receiver.notices("gravity", "http_401")[:2]
    assert second["since"] >= first["until"], "no dead letter is reported twice"
    assert stack.counters()["dead_lettered"] == 7


def test_counts_left_at_the_end_of_an_interval_are_sent_without_another_dead_letter(make_stack, gravity, receiver):
    stack = make_stack(relay=notify_relay(receiver.url, 4.0))
    gravity.configure(fail_all_status=401)
    stack.start_worker()

    stack.relay.enqueue([event(i, "a") for i in range(3)], destinations=["gravity"])
    wait_for(lambda: receiver.notices("gravity", "http_401"), what="the first notice")
    stack.relay.enqueue([event(i, "b") for i in range(4)], destinations=["gravity"])
    wait_for(lambda: stack.counters()["dead_lettered"] == 7, what="7 dead-lettered")
    assert NoticeCounts(stack.redis, stack.keys).pending("gravity") == {"http_401": 4}, "gated within the interval"

    # No dead letter follows: the scheduler reports the four once the interval is over.
    wait_for(lambda: len(receiver.notices("gravity", "http_401")) == 2, timeout=30, what="the waiting counts sent")
    first, second = receiver.notices("gravity", "http_401")
    assert (first["count"], second["count"]) == (3, 4)
    assert second["since"] >= first["until"]
    assert NoticeCounts(stack.redis, stack.keys).pending("gravity") == {}


def test_a_flush_takes_only_counts_whose_gate_is_open(redis_server):
    client = redis_server.client()
    counts = NoticeCounts(client, Keys(f"t-{uuid.uuid4().hex[:8]}"))
    assert counts.add("d", "http_401", 2, 1, 100.0, 0.3) is not None  # the gate opens for 0.3 s
    assert counts.add("d", "http_401", 5, 2, 100.1, 0.3) is None
    assert counts.flush("d", 100.1, 0.3) == [], "the gate is still closed"
    time.sleep(0.4)
    (notice,) = counts.flush("d", 100.5, 0.3)
    assert (notice.events, notice.letters, notice.since, notice.until) == (5, 2, 100.1, 100.5)
    assert counts.flush("d", 101.0, 0.3) == [], "nothing is reported twice"
    assert counts.add("d", "http_401", 1, 1, 101.0, 0.3) is None, "a flush closes the gate like a notice"


def test_deliveries_go_on_when_the_receiver_is_down_or_refuses(make_stack, gravity, receiver):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = f"http://127.0.0.1:{closed_port}/hooks/relay-secret-path"
    stack = make_stack(relay=notify_relay(down, 1.0))
    gravity.configure(fail_all_status=401)
    worker = stack.start_worker()

    stack.relay.enqueue([event(i) for i in range(3)], destinations=["gravity"])
    wait_for(lambda: stack.counters()["dead_lettered"] == 3, what="3 dead-lettered")
    wait_for(lambda: "dead-letter notice not sent (ConnectionError)" in worker.output(), what="the warning")
    gravity.configure(fail_all_status=None)
    stack.relay.enqueue([event(i, "b") for i in range(5)], destinations=["gravity"])
    wait_for(lambda: stack.counters()["delivered"] == 5, what="5 delivered with the receiver down")
    assert str(closed_port) not in worker.output() and "relay-secret-path" not in worker.output()


def test_a_refused_notice_is_logged_with_its_status_only(make_stack, gravity, receiver):
    receiver.status = 500
    stack = make_stack(relay=notify_relay(receiver.url, 60.0))
    gravity.configure(fail_all_status=401)
    worker = stack.start_worker()
    stack.relay.enqueue([event(i) for i in range(2)], destinations=["gravity"])
    wait_for(lambda: "gravity: dead-letter notice refused (status 500)" in worker.output(), what="the warning")
    assert "relay-secret-path" not in worker.output()


def test_a_notice_is_a_sentry_message_when_sentry_is_on(make_stack, gravity, receiver):
    stack = make_stack(relay={"notify_interval_seconds": 60.0})
    port = receiver.server.server_address[1]
    stack.env["SENTRY_DSN"] = f"http://publickey@127.0.0.1:{port}/1"
    gravity.configure(fail_all_status=401)
    stack.start_worker()
    stack.relay.enqueue([event(i) for i in range(3)], destinations=["gravity"])

    def notices() -> list[str]:
        return [e for e in receiver.envelopes if "events dead-lettered at gravity (http_401)" in e]

    found = wait_for(notices, what="the Sentry message")
    assert len(found) == 1
    assert '"destination":"gravity"' in found[0].replace(" ", "")
    for i in range(3):
        for text in personal(i):
            assert text not in "".join(receiver.envelopes)
    assert receiver.bodies == [], "no webhook configured: no POST"


def test_notify_sentry_false_keeps_notices_out_of_sentry(make_stack, gravity, receiver):
    stack = make_stack(relay={"notify_interval_seconds": 60.0, "notify_sentry": False})
    stack.env["SENTRY_DSN"] = f"http://publickey@127.0.0.1:{receiver.server.server_address[1]}/1"
    gravity.configure(fail_all_status=401)
    stack.start_worker(concurrency=1)

    def errors() -> list[str]:
        return [e for e in receiver.envelopes if "events dead-lettered (http_401" in e]

    for total, burst in ((3, "a"), (6, "b")):
        stack.relay.enqueue([event(i, burst) for i in range(3)], destinations=["gravity"])
        wait_for(lambda total=total: stack.counters()["dead_lettered"] == total, what=f"{total} dead letters")
        stack.wait_settled()
    # One process sends its Sentry events in order: a notice for the first burst would have
    # come before the error logged for the second.
    wait_for(lambda: len(errors()) >= 2, what="both dead-letter errors in Sentry")
    assert not any("dead-lettered at gravity" in e for e in receiver.envelopes)


def document(**relay: Any) -> dict[str, Any]:
    destination = {"vendor": "gravity_capi", "base_url": "http://127.0.0.1:1", "api_key_env": "K"}
    return {"relay": {"redis_url": "redis://127.0.0.1:1/0", **relay}, "destinations": {"gravity": destination}}


@pytest.mark.parametrize(
    ("relay", "message"),
    [
        (
            {"notify_webhook_url": "http://hooks.example.com/x"},
            "relay.notify_webhook_url: http:// to hooks.example.com",
        ),
        ({"notify_webhook_url": "https://u:p@hooks.example.com/x"}, "Credentials do not belong in the URL"),
        ({"notify_webhook_url": "ftp://hooks.example.com/x"}, "Not an http(s) URL"),
        ({"notify_webhook_token_env": "TOKEN"}, "relay.notify_webhook_token_env: Names a token but no"),
        ({"notify_interval_seconds": 0.1}, "relay.notify_interval_seconds: Use 1 to 86400 s"),
        ({"log_format": "xml"}, "relay.log_format: Use plain or json."),
    ],
)
def test_bad_notification_settings_are_refused_by_key(relay, message):
    with pytest.raises(ConfigurationError) as refused:
        settings_from_document(document(**relay), {})
    assert message in str(refused.value)
    assert "p@hooks" not in str(refused.value)


def test_a_worker_needs_the_webhook_token_it_names():
    relay = {"notify_webhook_url": "https://hooks.example.com/x", "notify_webhook_token_env": "TEST_NOTICE_TOKEN"}
    settings = settings_from_document(document(**relay), {"K": "key"})
    with pytest.raises(ConfigurationError, match="TEST_NOTICE_TOKEN is not set"):
        require_api_keys(settings)
    with_token = settings_from_document(document(**relay), {"K": "key", "TEST_NOTICE_TOKEN": TOKEN})
    require_api_keys(with_token)
    assert TOKEN in with_token.secrets and "https://hooks.example.com/x" in with_token.secrets
    assert TOKEN not in repr(with_token)
