"""The Tracify sandbox must honour the vendor's events contract over real HTTP."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from conversion_relay.sandbox import VENDOR_SANDBOXES, SandboxServer, TracifySandbox
from conversion_relay.sandbox.tracify import RULES

KEY = "sandbox-key"
T0 = 1_700_000_000.0
#: Real identity hashes of 192.168.1.1 (3), Mozilla/5.0 (4) and 192.168.1.1|Mozilla/5.0 (2).
IP_HASH = "2d0b84ff7b04b74906148264f4c6cba08b99a4c9a856ad92fb9ba0dde4932580"
UA_HASH = "fe3fa8b7cb726fc1507885122d8bc5dcb7bfbf0f17f08d8f4dd588bc810c929b"
SESSION_HASH = "6fa4c6102d82c29727f536f606dfa1780df4b188846ff70042cdafbcee84a404"


@pytest.fixture
def tracify() -> TracifySandbox:
    return TracifySandbox(api_keys={KEY}, clock=lambda: T0)


@pytest.fixture
def server(tracify: TracifySandbox):
    with SandboxServer({"tracify": tracify}) as srv:
        yield srv


@pytest.fixture
def endpoint(server: SandboxServer) -> str:
    return server.url_for("tracify") + "/api/v1/events"


@pytest.fixture
def control(server: SandboxServer) -> str:
    return f"{server.url}/_sandbox/tracify"


def post(endpoint: str, *events: Any, key: str | None = KEY) -> requests.Response:
    headers = {"tracify-token": key} if key is not None else {}
    return requests.post(endpoint, json={"events": list(events)}, headers=headers, timeout=5)


def event(kind: str = "pageview", **data: Any) -> dict[str, Any]:
    return {
        "url": "https://www.example.com/checkout/thank-you",
        "customer_site_id": "00000000-0000-0000-0000-000000000000",
        "identity_data": {IP_HASH: 3, UA_HASH: 4, SESSION_HASH: 2},
        "datetime": "2024-06-21 12:36:40",
        "type": kind,
        "data": {"origin": "https://www.example.com", **data},
    }


def purchase(order_id: str = "o-1", **data: Any) -> dict[str, Any]:
    return event("purchase", **{"order_id": order_id, "currency": "EUR", "amount": "100.00", **data})


def conversion(conversion_id: str = "c-1", **money: Any) -> dict[str, Any]:
    return event("conversion", conversion_id=conversion_id, currency="EUR", **(money or {"amount": "5.00"}))


def test_registry_and_defaults() -> None:
    assert VENDOR_SANDBOXES["tracify"] is TracifySandbox
    sandbox = VENDOR_SANDBOXES["tracify"]()
    assert sandbox.api_keys == frozenset({"sandbox-key"}) and sandbox.max_events_per_request is None


@pytest.mark.parametrize(
    ("key", "message", "auth"),
    [(None, "missing tracify-token header (raw API key)", None), ("wrong", "invalid tracify-token", "token")],
)
def test_unauthorized(endpoint: str, tracify: TracifySandbox, key: str | None, message: str, auth: str | None) -> None:
    response = post(endpoint, event(), key=key)
    assert response.status_code == 401
    assert response.json() == {"status": False, "error": message}
    assert tracify.requests[-1]["auth"] == auth and tracify.events == []


def test_bearer_prefix_is_not_accepted(endpoint: str) -> None:
    assert post(endpoint, event(), key=f"Bearer {KEY}").status_code == 401


def test_every_type_is_accepted_and_recorded(endpoint: str, tracify: TracifySandbox) -> None:
    batch = [
        event(Referer="https://ref.example", utm_source="fb", trc_mcmp_id="1"),
        event("productview"),
        event("addtocart"),
        purchase(ITEM1="SKU-1", AMT1="50.00", QTY1="2"),
        conversion("c-1", amount="5.00"),
        conversion("c-2", value="7,50"),
    ]
    response = post(endpoint, *batch)
    assert response.status_code == 200 and response.json() == {"status": True}
    assert tracify.events == batch
    assert tracify.counters == {"stored": 6, "duplicates": 0, "rejected_requests": 0}
    assert tracify.conversion_money_fields == {"c-1": "amount", "c-2": "value"}
    record = tracify.requests[-1]
    assert (record["auth"], record["event_count"], record["status"], record["at"]) == ("token", 6, 200, T0)


def test_dedup_first_received_wins(endpoint: str, tracify: TracifySandbox) -> None:
    first = purchase("o-1")
    assert post(endpoint, first, purchase("o-1", amount="999.00"), event()).status_code == 200
    assert post(endpoint, purchase("o-1", amount="1.00"), conversion("o-1"), conversion("o-1")).status_code == 200
    assert post(endpoint, event(), event()).status_code == 200
    assert tracify.counters == {"stored": 5, "duplicates": 3, "rejected_requests": 0}
    assert [e["data"].get("amount") for e in tracify.events if e["type"] == "purchase"] == ["100.00"]
    state = tracify.state()
    assert (state["order_ids"], state["conversion_ids"]) == (["o-1"], ["o-1"])


def _set(path: str, value: Any) -> Any:
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = event
        for part in parents:
            node = node[part]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return change


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("pageview", _set("url", KeyError), "url: required"),
        ("pageview", _set("url", "http:/"), "url: must be a string of at least 7 characters"),
        ("pageview", _set("customer_site_id", "site-1"), "customer_site_id: must be a UUID string"),
        ("pageview", _set("identity_data", KeyError), "identity_data: required"),
        ("pageview", _set("identity_data", {IP_HASH: 3}), "identity_data: a user agent hash (value 4) is required"),
        ("pageview", _set("identity_data", {UA_HASH: 4}), "identity_data: an IP address hash (value 3) is required"),
        ("pageview", _set(f"identity_data.{IP_HASH}", 5), f"identity_data.{IP_HASH}: value must be the integer 1"),
        ("pageview", _set(f"identity_data.{IP_HASH}", "3"), f"identity_data.{IP_HASH}: value must be"),
        ("pageview", _set(f"identity_data.{IP_HASH.upper()}", 1), f"identity_data.{IP_HASH.upper()}: key must be"),
        ("pageview", _set("datetime", KeyError), "datetime: required"),
        ("pageview", _set("datetime", "2024-06-21T12:36:40"), "datetime: must be a UTC time formatted"),
        ("pageview", _set("datetime", "2024-06-21 12:36:40+00:00"), "datetime: must be a UTC time formatted"),
        ("pageview", _set("datetime", "2024-02-30 12:36:40"), "datetime: must be a UTC time formatted"),
        ("pageview", _set("type", "checkout"), "type: must be one of pageview, productview, addtocart"),
        ("pageview", _set("type", KeyError), "type: required"),
        ("pageview", _set("data", KeyError), "data: required"),
        ("addtocart", _set("data.origin", KeyError), "data.origin: required"),
        ("purchase", _set("data.order_id", KeyError), "data.order_id: required"),
        ("purchase", _set("data.currency", "eur"), "data.currency: must be a 3-letter upper-case ISO-4217 code"),
        ("purchase", _set("data.currency", KeyError), "data.currency: required"),
        ("purchase", _set("data.amount", KeyError), "data.amount: required"),
        ("purchase", _set("data.amount", 100.0), "data.amount: must be a decimal number in a string"),
        ("purchase", _set("data.amount", "100 EUR"), "data.amount: must be a decimal number in a string"),
        ("conversion", _set("data.conversion_id", KeyError), "data.conversion_id: required"),
        ("conversion", _set("data.amount", KeyError), "data.amount: required (or data.value)"),
    ],
)
def test_one_invalid_event_refuses_the_request(
    endpoint: str, tracify: TracifySandbox, kind: str, change: Any, message: str
) -> None:
    bad = copy.deepcopy({"purchase": purchase("o-9"), "conversion": conversion("c-9")}.get(kind, event(kind)))
    change(bad)
    response = post(endpoint, event(), purchase("o-1"), bad)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] is False and body["error"].startswith(f"events[2].{message}")
    assert tracify.events == [] and tracify.counters == {"stored": 0, "duplicates": 0, "rejected_requests": 1}
    assert post(endpoint, purchase("o-1")).status_code == 200


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"events": [', "body: malformed JSON"),
        (b"[]", "body: must be a JSON object with an 'events' list"),
        (b"{}", "events: required"),
        (b'{"events": {}}', "events: must be a list of events"),
        (b'{"events": []}', "events: must contain at least one event"),
        (b'{"events": ["x"]}', "events[0]: must be a JSON object"),
    ],
)
def test_bad_bodies(endpoint: str, tracify: TracifySandbox, raw: bytes, message: str) -> None:
    response = requests.post(endpoint, data=raw, headers={"tracify-token": KEY}, timeout=5)
    assert response.status_code == 400 and response.json()["error"].startswith(message)
    assert tracify.counters["rejected_requests"] == 1


def test_max_events_per_request(endpoint: str, control: str, tracify: TracifySandbox) -> None:
    reply = requests.post(f"{control}/faults", json={"max_events_per_request": 2}, timeout=5)
    assert reply.status_code == 200 and reply.json()["max_events_per_request"] == 2
    too_many = post(endpoint, event(), event(), event())
    assert too_many.status_code == 413
    assert too_many.json() == {"status": False, "error": "events: at most 2 events per request, got 3"}
    assert post(endpoint, event(), event()).status_code == 200
    assert requests.post(f"{control}/faults", json={"max_events_per_request": 0}, timeout=5).status_code == 400
    requests.post(f"{control}/reset", timeout=5)
    assert tracify.max_events_per_request is None
    assert post(endpoint, *[event()] * 50).status_code == 200


def test_fault_controls_over_http(endpoint: str, control: str, tracify: TracifySandbox) -> None:
    script = {"statuses": [{"status": 429, "retry_after": 3, "body": {"status": False}}, 503]}
    assert requests.post(f"{control}/faults", json=script, timeout=5).status_code == 200
    first, second, third = (post(endpoint, purchase(f"o-{i}")) for i in range(3))
    assert (first.status_code, first.headers["Retry-After"], first.json()) == (429, "3", {"status": False})
    assert (second.status_code, third.status_code) == (503, 200)
    assert [e["data"]["order_id"] for e in tracify.events] == ["o-2"]
    assert [(r["status"], r["event_count"], r["auth"]) for r in tracify.requests] == [
        (429, 1, "token"),
        (503, 1, "token"),
        (200, 1, "token"),
    ]

    requests.post(f"{control}/faults", json={"drop_connections": 1}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        post(endpoint, purchase("o-3"))
    assert tracify.requests[-1]["status"] is None

    requests.post(f"{control}/faults", json={"fail_all_status": 500}, timeout=5)
    assert post(endpoint, event()).status_code == 500
    requests.post(f"{control}/faults", json={"fail_all_status": None, "latency_seconds": 0.2}, timeout=5)
    seen: list[int] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: seen.append(post(endpoint, event()).status_code))
    worker.start()
    time.sleep(0.1)
    assert tracify.in_flight == 1
    worker.join(5)
    assert seen == [200] and time.monotonic() - started >= 0.2 and tracify.in_flight == 0

    refused = requests.post(f"{control}/faults", json={"event_error_prefix": "x"}, timeout=5)
    assert refused.status_code == 400 and "no per-event results" in refused.json()["error"]
    state = requests.get(f"{control}/state", timeout=5).json()
    assert state["counters"]["stored"] == 2 and [r["status"] for r in state["requests"]][-3:] == [None, 500, 200]
    summary = requests.get(f"{control}/state", params={"summary": "true"}, timeout=5).json()
    assert "events" not in summary and "requests" not in summary and summary["events_stored"] == 2
    assert requests.post(f"{control}/reset", timeout=5).json() == {"ok": True}
    state = requests.get(f"{control}/state", timeout=5).json()
    assert (state["events"], state["requests"], state["order_ids"], state["faults"]["latency_seconds"]) == (
        [],
        [],
        [],
        0.0,
    )
    assert post(endpoint, purchase("o-2")).status_code == 200 and tracify.counters["duplicates"] == 0


def test_unknown_path_and_wrong_method(server: SandboxServer, endpoint: str, tracify: TracifySandbox) -> None:
    unknown = requests.post(server.url_for("tracify") + "/upload", json={}, headers={"tracify-token": KEY}, timeout=5)
    assert unknown.status_code == 404 and unknown.json() == {"status": False, "error": "no such endpoint: /upload"}
    wrong = requests.get(endpoint, headers={"tracify-token": KEY}, timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert tracify.events == []


def test_every_rule_is_labelled_with_its_source_in_code_and_docs() -> None:
    """A passing sandbox test proves a vendor rule only where the rule is documented."""
    page = (Path(__file__).parents[1] / "docs" / "vendors" / "tracify.md").read_text()
    for rule, source in RULES.items():
        assert any(word in source for word in ("documented", "third party", "assumed")), rule
        assert f"| {rule} | {source} |" in page, rule
    assert "upper case assumed" in RULES["currency three upper-case letters"]
