"""The Yusp / Gravity RECO sandbox must honour the vendor's WebshopServlet contract over real HTTP."""

from __future__ import annotations

import copy
import gzip
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from conversion_relay.sandbox import VENDOR_SANDBOXES, GravityRecoSandbox, SandboxServer
from conversion_relay.sandbox.gravity_reco import RULES

AUTH = ("sandbox", "sandbox-key")
T0 = 1_700_000_000.0


@pytest.fixture
def reco() -> GravityRecoSandbox:
    return GravityRecoSandbox(credentials={"sandbox": "sandbox-key", "shop2": "pw2"}, clock=lambda: T0)


@pytest.fixture
def server(reco: GravityRecoSandbox):
    with SandboxServer({"gravity-reco": reco}) as srv:
        yield srv


@pytest.fixture
def base(server: SandboxServer) -> str:
    return server.url_for("gravity-reco")


@pytest.fixture
def control(server: SandboxServer) -> str:
    return f"{server.url}/_sandbox/gravity-reco"


def url(base: str, operation: str = "addEvents", customer: str = "mywebshop") -> str:
    return f"{base}/grrec-{customer}-war/WebshopServlet/{operation}"


def post(
    base: str,
    entries: Any,
    operation: str = "addEvents",
    auth: Any = AUTH,
    params: dict[str, str] | None = None,
    **kw: Any,
) -> requests.Response:
    params = {"async": "true"} if params is None else params
    return requests.post(url(base, operation), json=entries, auth=auth, params=params, timeout=5, **kw)


def buy(item: str = "sampleItemId1", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "itemId": item,
        "userId": "sampleUserId1",
        "cookieId": "sampleCookieId1",
        "eventType": "BUY",
        "time": 1525625386,
        "nameValues": [
            {"name": "unitPrice", "value": "199.9"},
            {"name": "quantity", "value": "1"},
            {"name": "orderId", "value": "order-0123"},
        ],
    }
    out.update(extra)
    return out


def test_registry_and_defaults() -> None:
    assert VENDOR_SANDBOXES["gravity-reco"] is GravityRecoSandbox
    sandbox = VENDOR_SANDBOXES["gravity-reco"]()
    assert sandbox.credentials == {"sandbox": "sandbox-key"} and sandbox.max_body_bytes == 1_000_000


@pytest.mark.parametrize(
    ("auth", "headers", "message", "label"),
    [
        (None, {}, "missing credentials: use HTTP Basic authentication", None),
        (("sandbox", "wrong"), {}, "invalid credentials", "basic"),
        (("nobody", "sandbox-key"), {}, "invalid credentials", "basic"),
        (None, {"Authorization": "Bearer sandbox-key"}, "missing credentials: use HTTP Basic authentication", None),
    ],
)
def test_unauthorized(
    base: str, reco: GravityRecoSandbox, auth: Any, headers: dict[str, str], message: str, label: str | None
) -> None:
    response = post(base, [buy()], auth=auth, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": message, "faultInfo": "AUTHENTICATION"}
    assert response.headers["WWW-Authenticate"] == 'Basic realm="grrec"'
    assert reco.events == [] and reco.requests[-1]["auth"] == label


def test_add_events_success_and_request_record(base: str, reco: GravityRecoSandbox) -> None:
    login = {"userId": "u1", "cookieId": "c1", "eventType": "LOGIN"}
    search = {"cookieId": "c1", "eventType": "PRODUCT_SEARCH", "nameValues": [{"name": "SearchString", "value": "x"}]}
    tags = {
        "itemId": "i2",
        "eventType": "VIEW",
        "nameValues": [{"name": "tag", "value": "a"}, {"name": "tag", "value": "b"}],
    }
    custom = {"eventType": "SHARE", "cookieId": "c1", "recommendationId": "r-1", "extraField": 1}
    response = post(base, [buy(), login, search, tags, custom])
    assert (response.status_code, response.content) == (200, b"")
    assert reco.events == [buy(), login, search, tags, custom]
    record = reco.requests[-1]
    assert {key: record[key] for key in ("customer", "operation", "async", "query_keys", "auth", "event_count")} == {
        "customer": "mywebshop",
        "operation": "addEvents",
        "async": "true",
        "query_keys": ["async"],
        "auth": "basic",
        "event_count": 5,
    }
    assert record["at"] == T0
    other = requests.post(
        url(base, customer="my-web-shop"),
        json=[buy()],
        auth=("shop2", "pw2"),
        params={"method": "addEvents"},
        timeout=5,
    )
    assert other.status_code == 200
    assert (reco.requests[-1]["customer"], reco.requests[-1]["async"]) == ("my-web-shop", None)
    assert post(base, [], params={"async": "false"}).status_code == 200
    bad_async = post(base, [buy()], params={"async": "yes"})
    assert bad_async.status_code == 400 and bad_async.json()["message"] == "async: must be true or false"
    assert reco.counters["events_stored"] == 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update(itemId=None), "[0].itemId: null or empty values are not allowed"),
        (lambda e: e.update(userId=""), "[0].userId: null or empty values are not allowed"),
        (lambda e: e.update(nameValues=None), "[0].nameValues: null or empty values are not allowed"),
        (
            lambda e: e["nameValues"][1].update(value=None),
            "[0].nameValues[1].value: null or empty values are not allowed",
        ),
        (
            lambda e: e["nameValues"][2].update(value=""),
            "[0].nameValues[2].value: null or empty values are not allowed",
        ),
        (lambda e: e["nameValues"][0].update(name=""), "[0].nameValues[0].name: null or empty values are not allowed"),
        (lambda e: e["nameValues"][0].pop("value"), "[0].nameValues[0].value: required"),
        (
            lambda e: e["nameValues"][0].update(value=["a", "b"]),
            "[0].nameValues[0].value: must be a string; for several values repeat the name",
        ),
        (lambda e: e["nameValues"][0].update(value=199.9), "[0].nameValues[0].value: must be a string"),
        (
            lambda e: e.update(nameValues={"name": "a", "value": "b"}),
            "[0].nameValues: must be a list of name/value objects",
        ),
        (lambda e: e.update(time="1525625386"), "[0].time: must be an integer (UNIX seconds)"),
        (lambda e: e.update(time=1525625386000), "[0].time: must be an integer (UNIX seconds)"),
        (lambda e: e.update(cookieId=7), "[0].cookieId: must be a string"),
        (lambda e: e.pop("eventType"), "[0].eventType: required"),
        (lambda e: e.pop("itemId"), "[0].itemId: required for BUY events"),
        (
            lambda e: (e.pop("cookieId"), e.update(eventType="LOGIN")),
            "[0].cookieId: required for LOGIN events (userId and cookieId)",
        ),
    ],
)
def test_invalid_events_refuse_the_request(base: str, reco: GravityRecoSandbox, change: Any, message: str) -> None:
    bad = copy.deepcopy(buy())
    change(bad)
    response = post(base, [bad, buy("i2")])
    assert response.status_code == 400
    assert response.json() == {"message": message, "faultInfo": "INVALID_INPUT"}
    assert reco.events == [] and reco.counters["rejected_requests"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'[{"eventType": ', "body: malformed JSON"),
        (b'{"eventType": "VIEW", "itemId": "i"}', "body: must be a JSON array"),
        (b'[{"eventType": "VIEW", "itemId": "i"}, 5]', "[1]: must be a JSON object"),
    ],
)
def test_bad_bodies(base: str, raw: bytes, message: str) -> None:
    response = requests.post(url(base), data=raw, auth=AUTH, headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400 and response.json()["message"].startswith(message)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_compressed_uploads_are_refused(base: str, reco: GravityRecoSandbox, encoding: str) -> None:
    raw = gzip.compress(json.dumps([buy()]).encode())
    headers = {"Content-Type": "application/json; charset=utf-8", "Content-Encoding": encoding}
    response = requests.post(url(base), data=raw, auth=AUTH, headers=headers, timeout=5)
    assert response.status_code == 415
    assert response.json() == {
        "message": "compressed uploads are not accepted",
        "faultInfo": f"UNSUPPORTED_ENCODING: {encoding}",
    }
    assert reco.events == []
    identity = requests.post(
        url(base), data=json.dumps([buy()]), auth=AUTH, headers={"Content-Encoding": "identity"}, timeout=5
    )
    assert identity.status_code == 200


def _padded(size: int) -> bytes:
    entries = [buy(nameValues=[{"name": "pad", "value": "x"}])]
    pad = size - len(json.dumps(entries).encode()) + 1
    entries[0]["nameValues"][0]["value"] = "x" * pad
    raw = json.dumps(entries).encode()
    assert len(raw) == size
    return raw


def test_body_size_limit(base: str, reco: GravityRecoSandbox) -> None:
    with requests.Session() as session:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        too_big = session.post(url(base), data=_padded(1_000_001), auth=AUTH, headers=headers, timeout=5)
        assert too_big.status_code == 413
        assert too_big.json()["faultInfo"] == "PAYLOAD_TOO_LARGE" and "1000000 bytes" in too_big.json()["message"]
        assert (reco.requests[-1]["status"], reco.requests[-1]["bytes"]) == (413, 1_000_001)
        assert reco.requests[-1]["customer"] == "mywebshop"
        at_limit = session.post(url(base), data=_padded(1_000_000), auth=AUTH, headers=headers, timeout=5)
    assert at_limit.status_code == 200 and len(reco.events) == 1


def test_items_are_replaced_and_hidden_not_deleted(base: str, reco: GravityRecoSandbox) -> None:
    first = {
        "itemId": "i1",
        "title": "Sample product 1",
        "itemType": "Book",
        "nameValues": [{"name": "Price", "value": "9"}],
    }
    second = {"itemId": "i2", "title": "Sample product 2", "fromDate": 1525625386, "toDate": 1625625386}
    assert post(base, [first, second], operation="addItems").status_code == 200
    updated = {"itemId": "i1", "title": "Sample product 1", "nameValues": [{"name": "Price", "value": "8"}]}
    hidden = {"itemId": "i2", "hidden": True}
    assert post(base, [updated, hidden], operation="addItems", params={}).status_code == 200
    assert reco.items == {"i1": updated, "i2": hidden}
    assert reco.item_writes == [first, second, updated, hidden]
    state = reco.state()
    assert state["hidden_item_ids"] == ["i2"] and state["items_stored"] == 2 and state["counters"]["item_writes"] == 4
    bad_hidden = post(base, [{"itemId": "i3", "hidden": "true"}], operation="addItems")
    assert bad_hidden.json()["message"] == "[0].hidden: must be a boolean"
    no_id = post(base, [{"title": "x"}], operation="addItems")
    assert no_id.status_code == 400 and no_id.json()["message"] == "[0].itemId: required"
    assert post(base, [{"itemId": "i3", "title": ""}], operation="addItems").json()["message"] == (
        "[0].title: null or empty values are not allowed"
    )


def test_users_are_replaced(base: str, reco: GravityRecoSandbox) -> None:
    jack = {"userId": "u1", "nameValues": [{"name": "name", "value": "Jack Test"}, {"name": "City", "value": "Pécs"}]}
    rose = {"userId": "u1", "hidden": False, "nameValues": [{"name": "name", "value": "Rose Reco"}]}
    assert post(base, [jack], operation="addUsers").status_code == 200
    assert post(base, [rose], operation="addUsers").status_code == 200
    assert reco.users == {"u1": rose} and reco.user_writes == [jack, rose]
    missing = post(base, [{"nameValues": []}], operation="addUsers")
    assert missing.json() == {"message": "[0].userId: required", "faultInfo": "INVALID_INPUT"}


def test_no_dedup_resent_events_are_stored_again(base: str, reco: GravityRecoSandbox) -> None:
    batch = [buy("i1"), buy("i2")]
    assert post(base, batch).status_code == 200
    assert post(base, batch).status_code == 200
    assert reco.events == batch + batch
    assert (reco.counters["events_stored"], reco.counters["resent_events"]) == (4, 2)


def test_unknown_operation_path_and_method(base: str, reco: GravityRecoSandbox) -> None:
    recommend = requests.get(url(base, "getItemRecommendation"), auth=AUTH, timeout=5)
    assert recommend.status_code == 404 and recommend.json()["faultInfo"] == "NOT_FOUND"
    stray = requests.post(f"{base}/WebshopServlet/addEvents", json=[buy()], auth=AUTH, timeout=5)
    assert stray.status_code == 404 and stray.json()["message"] == "no such operation: /WebshopServlet/addEvents"
    wrong = requests.get(url(base), auth=AUTH, timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert reco.events == []


def test_fault_controls_over_http(base: str, control: str, reco: GravityRecoSandbox) -> None:
    script = {
        "statuses": [{"status": 503, "retry_after": "4"}, {"status": 500, "body": {"message": "m", "faultInfo": "f"}}]
    }
    assert requests.post(f"{control}/faults", json=script, timeout=5).status_code == 200
    first, second, third = (post(base, [buy(f"i{i}")]) for i in range(3))
    assert (first.status_code, first.headers["Retry-After"]) == (503, "4")
    assert (second.status_code, second.json()) == (500, {"message": "m", "faultInfo": "f"})
    assert third.status_code == 200 and [e["itemId"] for e in reco.events] == ["i2"]
    assert [(r["status"], r["customer"], r["event_count"]) for r in reco.requests] == [
        (503, "mywebshop", 1),
        (500, "mywebshop", 1),
        (200, "mywebshop", 1),
    ]

    requests.post(f"{control}/faults", json={"drop_connections": 1}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        post(base, [buy()])
    assert reco.requests[-1]["status"] is None and reco.requests[-1]["auth"] == "basic"

    requests.post(f"{control}/faults", json={"fail_all_status": 502}, timeout=5)
    assert [post(base, [buy()]).status_code for _ in range(2)] == [502, 502]
    requests.post(f"{control}/faults", json={"fail_all_status": None, "latency_seconds": 0.2}, timeout=5)
    seen: list[int] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: seen.append(post(base, [buy()]).status_code))
    worker.start()
    time.sleep(0.1)
    assert reco.in_flight == 1
    worker.join(5)
    assert seen == [200] and time.monotonic() - started >= 0.2 and reco.in_flight == 0

    refused = requests.post(f"{control}/faults", json={"event_error_prefix": "x"}, timeout=5)
    assert refused.status_code == 400 and "no per-event results" in refused.json()["error"]
    state = requests.get(f"{control}/state", timeout=5).json()
    assert state["events_stored"] == 2 and state["faults"]["latency_seconds"] == 0.2
    assert requests.post(f"{control}/reset", timeout=5).json() == {"ok": True}
    state = requests.get(f"{control}/state", timeout=5).json()
    assert (state["events"], state["items"], state["users"], state["requests"]) == ([], {}, {}, [])
    assert state["counters"] == dict.fromkeys(state["counters"], 0)


def test_every_rule_is_labelled_with_its_source_in_code_and_docs() -> None:
    """A passing sandbox test proves a vendor rule only where the rule is documented."""
    page = (Path(__file__).parents[1] / "docs" / "vendors" / "gravity_reco.md").read_text()
    for rule, source in RULES.items():
        assert any(word in source for word in ("documented", "vendor code", "assumed")), rule
        assert f"| {rule} | {source} |" in page, rule
    assert RULES["null or empty values refused"].startswith("assumed")
