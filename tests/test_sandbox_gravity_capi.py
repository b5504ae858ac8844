"""The Gravity CAPI sandbox must honour the vendor's documented contract over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

from conversion_relay.sandbox import VENDOR_SANDBOXES, Faults, GravityCapiSandbox, SandboxServer
from tests.fakes import FakeClock

KEY = "sandbox-key"
T0 = 1_700_000_000.0
HOURS_48 = 48 * 3600


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def gravity(clock: FakeClock) -> GravityCapiSandbox:
    return GravityCapiSandbox(api_keys={KEY, "second-key"}, clock=clock)


@pytest.fixture
def server(gravity: GravityCapiSandbox):
    with SandboxServer({"gravity-capi": gravity}) as srv:
        yield srv


@pytest.fixture
def endpoint(server: SandboxServer) -> str:
    return server.url_for("gravity-capi") + "/gateway/events"


@pytest.fixture
def control(server: SandboxServer) -> str:
    return f"{server.url}/_sandbox/gravity-capi"


def post(endpoint: str, payload: Any, key: str | None = KEY, **kw: Any) -> requests.Response:
    params = {"api_key": key} if key is not None else None
    return requests.post(endpoint, params=params, json=payload, timeout=5, **kw)


def event(event_id: str | None = "e1", name: str = "Purchase", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"event_name": name, "event_time": 1_699_999_000, "action_source": "website"}
    if event_id is not None:
        out["event_id"] = event_id
    out.update(extra)
    return out


def statuses(response: requests.Response) -> list[str]:
    return [result["status"] for result in response.json()["results"]]


def test_server_api_and_registry(server: SandboxServer, gravity: GravityCapiSandbox) -> None:
    assert VENDOR_SANDBOXES["gravity-capi"] is GravityCapiSandbox
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.url_for("gravity-capi") == f"http://127.0.0.1:{server.port}/gravity-capi"
    assert server.vendor("gravity-capi") is gravity
    assert isinstance(gravity.faults, Faults)
    with pytest.raises(KeyError):
        server.url_for("nope")


def test_auth_by_query_parameter(endpoint: str, gravity: GravityCapiSandbox) -> None:
    response = post(endpoint, {"data": [event()]})
    assert response.status_code == 200
    assert response.json()["results"] == [{"event_id": "e1", "status": "ok", "attributed": False}]
    assert gravity.requests[-1]["auth"] == "query"
    assert gravity.requests[-1]["query_keys"] == ["api_key"]
    assert gravity.requests[-1]["at"] == T0


def test_auth_by_bearer_header(endpoint: str, gravity: GravityCapiSandbox) -> None:
    response = post(endpoint, {"data": [event()]}, key=None, headers={"Authorization": "Bearer second-key"})
    assert response.status_code == 200
    record = gravity.requests[-1]
    assert (record["auth"], record["query_keys"], record["event_count"]) == ("bearer", [], 1)
    assert gravity.events == [event()]


@pytest.mark.parametrize(
    ("key", "headers", "message", "auth"),
    [
        (None, {}, "missing API key", None),
        ("wrong", {}, "invalid API key", "query"),
        (None, {"Authorization": "Bearer wrong"}, "invalid API key", "bearer"),
        (None, {"Authorization": f"Basic {KEY}"}, "missing API key", None),
    ],
)
def test_unauthorized(
    endpoint: str, gravity: GravityCapiSandbox, key: str | None, headers: dict[str, str], message: str, auth: str | None
) -> None:
    response = post(endpoint, {"data": [event()]}, key=key, headers=headers)
    assert response.status_code == 401
    assert message in response.json()["error"]
    assert gravity.events == []
    assert gravity.requests[-1]["status"] == 401
    assert gravity.requests[-1]["auth"] == auth


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data": [', "body: malformed JSON"),
        (b"", "body: malformed JSON"),
        (b'[{"event_name": "Lead"}]', "body: must be a JSON object"),
        (b'{"events": []}', "data: required"),
        (b'{"data": {"event_name": "Lead"}}', "data: must be a list"),
        (b'{"data": []}', "data: must contain at least one event"),
        (b'{"data": [{"event_name": "Lead"}], "test_event_code": 7}', "test_event_code: must be a string"),
    ],
)
def test_bad_request(endpoint: str, gravity: GravityCapiSandbox, body: bytes, message: str) -> None:
    response = requests.post(
        endpoint, params={"api_key": KEY}, data=body, timeout=5, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert gravity.events == [] and gravity.counters["ok"] == 0


def test_event_count_limit(endpoint: str, gravity: GravityCapiSandbox) -> None:
    too_many = post(endpoint, {"data": [event(f"e{i}") for i in range(1001)]})
    assert too_many.status_code == 400
    assert "at most 1000 events" in too_many.json()["error"]
    assert gravity.events == []
    at_limit = post(endpoint, {"data": [event(f"e{i}") for i in range(1000)]})
    assert at_limit.status_code == 200
    assert at_limit.json()["events_received"] == 1000
    assert len(gravity.events) == 1000


def _padded_body(size: int) -> bytes:
    skeleton = {"data": [event(custom_data={"content_name": ""})]}
    pad = size - len(json.dumps(skeleton).encode())
    skeleton["data"][0]["custom_data"]["content_name"] = "x" * pad
    body = json.dumps(skeleton).encode()
    assert len(body) == size
    return body


def test_body_size_limit(endpoint: str, gravity: GravityCapiSandbox) -> None:
    with requests.Session() as session:
        headers = {"Content-Type": "application/json"}
        too_big = session.post(
            endpoint, params={"api_key": KEY}, data=_padded_body(1_000_001), headers=headers, timeout=5
        )
        assert too_big.status_code == 413
        assert "1000000 bytes" in too_big.json()["error"]
        assert gravity.events == []
        assert gravity.requests[-1]["status"] == 413
        assert gravity.requests[-1]["bytes"] == 1_000_001
        at_limit = session.post(
            endpoint, params={"api_key": KEY}, data=_padded_body(1_000_000), headers=headers, timeout=5
        )
    assert at_limit.status_code == 200
    assert statuses(at_limit) == ["ok"]
    assert gravity.requests[-1]["bytes"] == 1_000_000


def test_per_event_results_and_counters(endpoint: str, gravity: GravityCapiSandbox) -> None:
    batch = [
        event("a", user_data={"grclid": "click-1", "em": ["f" * 64], "external_id": ["u1"]}),
        "not-an-event",
        {"event_id": "b", "event_time": 1},
        event("c", name=""),
        event("d", event_time="yesterday"),
        event("e", event_time=True),
        event("f", user_data=["x"]),
        event("g", user_data={"em": "a@b.c"}),
        event("h", user_data={"ph": ["+15551234567", 5]}),
        event("i", user_data={"external_id": "u1"}),
        event("j", name="MyCustomEvent", user_data={"grclid": ""}),
        event(None, name="Lead"),
        event(7),
    ]
    response = post(endpoint, {"data": batch})
    assert response.status_code == 200
    body = response.json()
    assert (body["events_received"], body["events_processed"], body["events_errored"]) == (13, 3, 10)
    assert body["test_mode"] is False
    errors = [(r["event_id"], r.get("error")) for r in body["results"]]
    assert errors == [
        ("a", None),
        (None, "event: must be a JSON object"),
        ("b", "event_name: required"),
        ("c", "event_name: must be a non-empty string"),
        ("d", "event_time: must be an integer (UNIX seconds)"),
        ("e", "event_time: must be an integer (UNIX seconds)"),
        ("f", "user_data: must be an object"),
        ("g", "user_data.em: must be a list of strings"),
        ("h", "user_data.ph: must be a list of strings"),
        ("i", "user_data.external_id: must be a list of strings"),
        ("j", None),
        (None, None),
        (None, "event_id: must be a string"),
    ]
    assert statuses(response) == ["ok"] + ["error"] * 9 + ["ok", "ok", "error"]
    assert [r["attributed"] for r in body["results"]] == [True] + [False] * 12
    assert gravity.counters == {"ok": 3, "duplicate": 0, "test_ok": 0, "skipped": 0, "error": 10}
    assert gravity.events == [batch[0], batch[10], batch[11]]


def test_dedup_within_48_hours(endpoint: str, gravity: GravityCapiSandbox, clock: FakeClock) -> None:
    first = post(endpoint, {"data": [event("d1"), event("d1"), event("d1", name="Lead")]})
    assert statuses(first) == ["ok", "duplicate", "ok"]
    clock.now = T0 + HOURS_48 - 1
    assert statuses(post(endpoint, {"data": [event("d1")]})) == ["duplicate"]
    clock.now = T0 + HOURS_48
    assert statuses(post(endpoint, {"data": [event("d1"), event("d1", name="Lead")]})) == ["ok", "ok"]
    assert statuses(post(endpoint, {"data": [event("d1")]})) == ["duplicate"]
    assert statuses(post(endpoint, {"data": [event(None), event(None)]})) == ["ok", "ok"]
    assert gravity.counters["ok"] == 6 and gravity.counters["duplicate"] == 3
    assert len(gravity.events) == 6


def test_test_mode_validates_without_storing(endpoint: str, gravity: GravityCapiSandbox) -> None:
    opted = event("t2", user_data={"external_id": ["gone"]})
    gravity.configure(opted_out_external_ids=["gone"])
    response = post(
        endpoint, {"data": [event("t1"), event("t1"), opted, {"event_id": "t3"}], "test_event_code": "TEST123"}
    )
    body = response.json()
    assert body["test_mode"] is True
    assert statuses(response) == ["test_ok", "test_ok", "test_ok", "error"]
    assert gravity.events == []
    assert gravity.counters["test_ok"] == 3
    live = post(endpoint, {"data": [event("t1")]})
    assert live.json()["test_mode"] is False
    assert statuses(live) == ["ok"]


def test_opted_out_users_are_skipped(endpoint: str, gravity: GravityCapiSandbox, control: str) -> None:
    reply = requests.post(f"{control}/faults", json={"opted_out_external_ids": ["u-out"]}, timeout=5)
    assert reply.status_code == 200 and reply.json()["opted_out_external_ids"] == ["u-out"]
    batch = [event("s1", user_data={"external_id": ["x", "u-out"]}), event("s2", user_data={"external_id": ["u-in"]})]
    response = post(endpoint, {"data": batch})
    assert statuses(response) == ["skipped", "ok"]
    assert response.json()["events_processed"] == 2
    assert gravity.events == [batch[1]]
    assert gravity.counters["skipped"] == 1


def test_scripted_statuses_with_retry_after(endpoint: str, gravity: GravityCapiSandbox) -> None:
    gravity.faults.configure(
        statuses=[
            {"status": 503, "retry_after": "2"},
            {"status": 429, "retry_after": 7, "body": {"error": "slow down"}},
            500,
        ]
    )
    first, second, third, fourth = (post(endpoint, {"data": [event(f"r{i}")]}) for i in range(4))
    assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
    assert (second.status_code, second.headers["Retry-After"], second.json()) == (429, "7", {"error": "slow down"})
    assert third.status_code == 500 and "Retry-After" not in third.headers
    assert fourth.status_code == 200 and statuses(fourth) == ["ok"]
    assert [r["status"] for r in gravity.requests] == [503, 429, 500, 200]
    assert [r["event_count"] for r in gravity.requests] == [1, 1, 1, 1]
    assert [e["event_id"] for e in gravity.events] == ["r3"]


def test_latency_and_in_flight(endpoint: str, gravity: GravityCapiSandbox) -> None:
    gravity.faults.configure(latency_seconds=0.3)
    seen: list[int] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: seen.append(post(endpoint, {"data": [event()]}).status_code))
    worker.start()
    time.sleep(0.15)
    assert gravity.in_flight == 1
    worker.join(5)
    assert time.monotonic() - started >= 0.3
    assert seen == [200]
    assert gravity.in_flight == 0


def test_dropped_connection(endpoint: str, gravity: GravityCapiSandbox) -> None:
    gravity.faults.configure(drop_connections=1)
    with pytest.raises(requests.ConnectionError):
        post(endpoint, {"data": [event("x1"), event("x2")]})
    assert gravity.requests[-1]["status"] is None
    assert gravity.requests[-1]["event_count"] == 2
    assert gravity.events == []
    assert statuses(post(endpoint, {"data": [event("x1")]})) == ["ok"]


def test_fail_all_status_until_cleared(endpoint: str, gravity: GravityCapiSandbox) -> None:
    gravity.faults.configure(fail_all_status=503)
    assert [post(endpoint, {"data": [event()]}).status_code for _ in range(3)] == [503, 503, 503]
    assert gravity.events == []
    gravity.faults.configure(fail_all_status=None)
    assert post(endpoint, {"data": [event()]}).status_code == 200


def test_event_error_prefix(endpoint: str, gravity: GravityCapiSandbox) -> None:
    gravity.faults.configure(event_error_prefix="bad-")
    response = post(endpoint, {"data": [event("bad-1"), event("good-1"), event("bad-2")]})
    body = response.json()
    assert statuses(response) == ["error", "ok", "error"]
    assert "bad-" in body["results"][0]["error"]
    assert body["events_errored"] == 2
    assert [e["event_id"] for e in gravity.events] == ["good-1"]


def test_control_endpoints_over_http(endpoint: str, control: str, server: SandboxServer) -> None:
    reply = requests.post(f"{control}/faults", json={"statuses": [{"status": 503, "retry_after": "1"}]}, timeout=5)
    assert reply.status_code == 200
    assert reply.json()["faults"]["statuses"] == [{"status": 503, "retry_after": "1"}]
    assert post(endpoint, {"data": [event("c1")]}).status_code == 503
    assert statuses(post(endpoint, {"data": [event("c1")]})) == ["ok"]

    state = requests.get(f"{control}/state", timeout=5).json()
    assert state["counters"]["ok"] == 1
    assert [r["status"] for r in state["requests"]] == [503, 200]
    assert state["events"] == [event("c1")]
    summary = requests.get(f"{control}/state", params={"summary": "1"}, timeout=5).json()
    assert summary["events_stored"] == 1 and "events" not in summary and "requests" not in summary

    assert requests.post(f"{control}/reset", timeout=5).json() == {"ok": True}
    state = requests.get(f"{control}/state", timeout=5).json()
    assert (state["requests"], state["events"], state["counters"]["ok"]) == ([], [], 0)
    assert statuses(post(endpoint, {"data": [event("c1")]})) == ["ok"]

    bad = requests.post(f"{control}/faults", json={"nonsense": 1}, timeout=5)
    assert bad.status_code == 400 and "nonsense" in bad.json()["error"]
    assert requests.post(f"{control}/faults", json={"statuses": ["x"]}, timeout=5).status_code == 400
    assert requests.get(f"{control}/faults", timeout=5).status_code == 405
    missing = requests.get(f"{server.url}/_sandbox/nope/state", timeout=5)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_unknown_path_and_wrong_method(server: SandboxServer, endpoint: str, gravity: GravityCapiSandbox) -> None:
    unknown = requests.post(
        server.url_for("gravity-capi") + "/gateway/evnts", params={"api_key": KEY}, json={"data": [event()]}, timeout=5
    )
    assert unknown.status_code == 404 and "/gateway/evnts" in unknown.json()["error"]
    no_vendor = requests.post(f"{server.url}/other-vendor/gateway/events", json={}, timeout=5)
    assert no_vendor.status_code == 404 and "other-vendor" in no_vendor.json()["error"]
    wrong = requests.get(endpoint, params={"api_key": KEY}, timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert gravity.events == []


def test_keep_alive_and_state_is_json(endpoint: str, gravity: GravityCapiSandbox) -> None:
    with requests.Session() as session:
        replies = [
            session.post(endpoint, params={"api_key": KEY}, json={"data": [event(f"k{i}")]}, timeout=5)
            for i in range(3)
        ]
    for reply in replies:
        assert reply.raw.version == 11
        assert int(reply.headers["Content-Length"]) == len(reply.content)
        assert reply.headers.get("Connection", "").lower() != "close"
    state = json.loads(json.dumps(gravity.state()))
    assert [e["event_id"] for e in state["events"]] == ["k0", "k1", "k2"]
    assert state["counters"]["ok"] == 3 and state["in_flight"] == 0


def test_stop_closes_keep_alive_connections(gravity: GravityCapiSandbox) -> None:
    server = SandboxServer({"gravity-capi": gravity}).start()
    endpoint = server.url_for("gravity-capi") + "/gateway/events"
    with requests.Session() as session:
        first = session.post(endpoint, params={"api_key": KEY}, json={"data": [event()]}, timeout=5)
        assert first.status_code == 200
        server.stop()
        with pytest.raises(requests.ConnectionError):
            session.post(endpoint, params={"api_key": KEY}, json={"data": [event("late")]}, timeout=5)
    assert [e["event_id"] for e in gravity.events] == ["e1"]
