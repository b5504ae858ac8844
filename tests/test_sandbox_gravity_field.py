"""The Gravity Field SSAPI sandbox must honour the vendor's OpenAPI document and prose rules over real HTTP."""

from __future__ import annotations

import base64
import copy
import importlib.resources
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from conversion_relay.sandbox import VENDOR_SANDBOXES, GravityFieldSandbox, SandboxServer
from tests.fakes import FakeClock

KEY = "sandbox-key"
T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parent.parent
EVENT_SCHEMAS = [
    "addToCart",
    "purchase",
    "removeFromCart",
    "syncCart",
    "addToWishList",
    "changeAttr",
    "filterItems",
    "keywordSearch",
    "promocodeEntered",
    "sortItems",
    "newsletterSubscription",
    "signUp",
    "login",
    "customEvent",
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def field(clock: FakeClock) -> GravityFieldSandbox:
    return GravityFieldSandbox(api_keys={KEY, "other-key"}, clock=clock)


@pytest.fixture
def server(field: GravityFieldSandbox):
    with SandboxServer({"gravity-field": field}) as srv:
        yield srv


@pytest.fixture
def base(server: SandboxServer) -> str:
    return server.url_for("gravity-field")


@pytest.fixture
def control(server: SandboxServer) -> str:
    return f"{server.url}/_sandbox/gravity-field"


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(
    base: str, payload: Any, path: str = "/ssapi/event", headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.post(base + path, json=payload, headers=bearer() if headers is None else headers, timeout=5)


def purchase(transaction: str = "t-1", **props: Any) -> dict[str, Any]:
    properties = {
        "eventType": "purchase-v1",
        "value": 100,
        "currency": "RUB",
        "uniqueTransactionId": transaction,
        "cart": [{"productId": "sku_1", "quantity": 1, "itemPrice": 100}],
    }
    properties.update(props)
    return {"name": "Purchase", "properties": properties}


def request_body(*events: dict[str, Any], user: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "user": {"id": "100"} if user is None else user,
        "session": {"custom": "custom_session_100"},
        "context": {
            "page": {"type": "OTHER", "data": [], "location": "https://shop.example.com/thank-you"},
            "device": {"userAgent": "Mozilla/5.0", "ip": "8.8.8.8"},
        },
        "events": list(events) or [purchase()],
    }
    out.update(top)
    return out


def keys_anywhere(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(keys_anywhere(item) for item in node)) if node else set()
    if isinstance(node, dict):
        return set(node).union(*(keys_anywhere(value) for value in node.values()))
    return set()


def test_openapi_data_file_is_prose_free_and_complete() -> None:
    resource = importlib.resources.files("conversion_relay.schemas").joinpath("data/gravity_field_openapi.json")
    text = resource.read_text(encoding="utf-8")
    document = json.loads(text)
    assert text == json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    assert not keys_anywhere(document) & {"description", "title", "example", "examples", "summary"}
    schemas = document["components"]["schemas"]
    body = document["paths"]["/ssapi/event"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = [alt["$ref"] for alt in body["properties"]["events"]["items"]["anyOf"]]
    assert refs == [f"#/components/schemas/{name}" for name in EVENT_SCHEMAS]
    assert body["required"] == ["user", "session", "context", "events"]
    required = {name: schemas[name]["properties"]["properties"].get("required") for name in EVENT_SCHEMAS}
    assert required == {
        "addToCart": ["eventType", "value", "quantity", "productId"],
        "purchase": ["eventType", "value", "uniqueTransactionId", "cart"],
        "removeFromCart": ["eventType", "value", "productId"],
        "syncCart": ["eventType", "cart"],
        "addToWishList": ["eventType", "productId"],
        "changeAttr": ["eventType", "attributeType", "attributeValue"],
        "filterItems": ["eventType", "filterType"],
        "keywordSearch": ["eventType", "keywords"],
        "promocodeEntered": ["eventType", "code"],
        "sortItems": ["eventType", "sortBy", "sortOrder"],
        "newsletterSubscription": ["eventType"],
        "signUp": ["eventType"],
        "login": ["eventType"],
        "customEvent": None,
    }
    assert all(schemas[name]["required"] == ["name", "properties"] for name in EVENT_SCHEMAS[:-1])
    assert "required" not in schemas["customEvent"]
    assert schemas["purchase"]["properties"]["properties"]["properties"]["cart"]["items"]["required"] == [
        "productId",
        "quantity",
        "itemPrice",
    ]
    page = schemas["context"]["properties"]["page"]
    assert page["properties"]["type"] == {
        "type": "string",
        "enum": ["HOMEPAGE", "PRODUCT", "CART", "CATEGORY", "SEARCH", "OTHER"],
    }
    assert page["required"] == ["type", "data", "location"] and schemas["context"]["required"] == ["page"]
    response_200 = document["paths"]["/ssapi/event"]["post"]["responses"]["200"]
    assert response_200["content"]["application/json"]["schema"]["properties"]["user"]["properties"]["slid"] == {
        "type": "string",
        "nullable": True,
    }


def test_extraction_tool_filters_prose_mechanically(tmp_path: Path) -> None:
    document = {
        "openapi": "3.0.3",
        "info": {"title": "T", "version": "1"},
        "components": {
            "schemas": {
                "thing": {
                    "type": "object",
                    "description": "prose",
                    "example": {"description": "x"},
                    "properties": {"description": {"type": "string", "description": "a field named description"}},
                    "required": ["description"],
                }
            }
        },
        "paths": {"/x": {"post": {"tags": ["A"], "responses": {"200": {"description": "ok"}}}}},
    }
    seed = tmp_path / "seed.txt"
    seed.write_text("# Страница\n\n```json\n" + json.dumps(document) + "\n```\n\nТекст.\n", encoding="utf-8")
    out = tmp_path / "out.json"
    tool = ROOT / "tools" / "extract_field_openapi.py"
    done = subprocess.run([sys.executable, str(tool), str(seed), str(out)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text(encoding="utf-8")) == {
        "openapi": "3.0.3",
        "info": {"version": "1"},
        "components": {
            "schemas": {
                "thing": {
                    "type": "object",
                    "properties": {"description": {"type": "string"}},
                    "required": ["description"],
                }
            }
        },
        "paths": {"/x": {"post": {"responses": {"200": {}}}}},
    }
    assert out.read_text(encoding="utf-8").startswith('{\n "components": {\n  "schemas"')
    seed.write_text("```json\n{}\n```\n```json\n{}\n```\n", encoding="utf-8")
    twice = subprocess.run([sys.executable, str(tool), str(seed), str(out)], capture_output=True, text=True, timeout=30)
    assert twice.returncode != 0 and "exactly one ```json block" in twice.stderr


def test_registry_and_defaults() -> None:
    assert VENDOR_SANDBOXES["gravity-field"] is GravityFieldSandbox
    sandbox = VENDOR_SANDBOXES["gravity-field"]()
    assert sandbox.api_keys == frozenset({"sandbox-key"}) and sandbox.rate_limit_per_second == 500
    assert sandbox.max_body_bytes is None


@pytest.mark.parametrize(
    ("headers", "status", "auth"),
    [
        (bearer(), 200, "bearer"),
        (bearer("other-key"), 200, "bearer"),
        ({"Authorization": "Basic " + base64.b64encode(b"sandbox-key:").decode()}, 200, "basic"),
        ({"Authorization": "Basic " + base64.b64encode(b"sandbox-key:secret").decode()}, 401, "basic"),
        ({"Authorization": "Basic " + base64.b64encode(b"sandbox-key").decode()}, 401, "basic"),
        ({"Authorization": "Basic !!!"}, 401, "basic"),
        (bearer("wrong"), 401, "bearer"),
        ({"Authorization": KEY}, 401, None),
        ({}, 401, None),
    ],
)
def test_auth(base: str, field: GravityFieldSandbox, headers: dict[str, str], status: int, auth: str | None) -> None:
    response = post(base, request_body(), headers=headers)
    assert response.status_code == status
    assert field.requests[-1]["auth"] == auth
    if status == 401:
        expected = "invalid API key" if auth else "missing API key: send 'Authorization: Bearer <section API key>'"
        assert response.json() == {"code": 401, "message": expected, "type": "unauthorized"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert field.events == []


def test_new_user_gets_ids_and_known_user_gets_204(base: str, field: GravityFieldSandbox) -> None:
    first = post(base, request_body())
    assert first.status_code == 200
    assert first.json() == {"user": {"slid": "sandbox-slid-1"}, "session": {"sl": "sandbox-sl-2"}}
    null_ids = request_body(purchase("t-2"), user={"slid": None, "slid_server": None}, session={"sl": None})
    assert post(base, null_ids).json() == {"user": {"slid": "sandbox-slid-3"}, "session": {"sl": "sandbox-sl-4"}}
    known_session = request_body(purchase("t-3"), user={"slid": ""}, session={"sl": "s-9"})
    assert post(base, known_session).json() == {"user": {"slid": "sandbox-slid-5"}, "session": {"sl": None}}
    known = post(base, request_body(purchase("t-4"), user={"id": "100", "slid": "slid-7"}))
    assert (known.status_code, known.content, known.headers["Content-Type"]) == (204, b"", "text/plain")
    sent = request_body(purchase("t-4"), user={"id": "100", "slid": "slid-7"})
    assert field.events[-1] == {
        "user": sent["user"],
        "session": sent["session"],
        "context": sent["context"],
        "event": sent["events"][0],
    }
    assert field.counters["events"] == 4 and len(field.events) == 4
    assert [r["event_count"] for r in field.requests] == [1, 1, 1, 1]


def test_every_predefined_event_and_faithful_any_of(base: str, field: GravityFieldSandbox) -> None:
    cart = [{"productId": "sku_1", "quantity": 2, "itemPrice": 9.5, "size": "M"}]
    predefined = [
        {"eventType": "add-to-cart-v1", "value": 19, "quantity": 2, "productId": "sku_1", "cart": cart},
        {"eventType": "purchase-v1", "value": 19, "uniqueTransactionId": "t-9", "cart": cart},
        {"eventType": "remove-from-cart-v1", "value": 9.5, "productId": "sku_1"},
        {"eventType": "sync-cart-v1", "cart": cart},
        {"eventType": "add-to-wishlist-v1", "productId": "sku_1"},
        {"eventType": "change-attribute-v1", "attributeType": "color", "attributeValue": "Gray"},
        {"eventType": "filter-items-v1", "filterType": "size", "filterNumericValue": 42},
        {"eventType": "keyword-search-v1", "keywords": "red shoes"},
        {"eventType": "enter-promo-code-v1", "code": "SALE"},
        {"eventType": "sort-items-v1", "sortBy": "price", "sortOrder": "DESC"},
        {"eventType": "newsletter-subscription-v1"},
        {"eventType": "signup-v1", "cuid": "c", "cuidType": "customer_id", "hashedEmail": "h"},
        {"eventType": "login-v1", "event_time": "2024-06-21T12:36:40.000+00:00"},
    ]
    others = [
        {"name": "Custom", "properties": {"value": 3, "customProperty": "x", "anything": [1]}},
        {"name": "Unknown type", "properties": {"eventType": "foo-v1", "value": 1}},
        {"properties": {"eventType": "foo-v1", "customProperty": 5, "keywords": "x"}, "name": "matches keywordSearch"},
        {},
    ]
    events = [{"name": props["eventType"], "properties": props} for props in predefined] + others
    response = post(base, request_body(*events))
    assert response.status_code == 200, response.text
    assert [stored["event"] for stored in field.events] == events
    assert field.counters["events"] == 17


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["events"][0]["properties"].pop("cart"), "events[0].properties.cart: required"),
        (lambda b: b["events"][0]["properties"].update(value="100"), "events[0].properties.value: must be a number"),
        (
            lambda b: b["events"][0]["properties"]["cart"][0].update(quantity=1.5),
            "events[0].properties.cart[0].quantity: must be an integer",
        ),
        (lambda b: b["events"][0].pop("name"), "events[0].name: required"),
        (
            lambda b: b["events"].append({"name": "A", "properties": {"eventType": "add-to-cart-v1", "value": 1}}),
            "events[1].properties.quantity: required",
        ),
        (lambda b: b["events"].append("oops"), "events[1]: must be an object"),
        (
            lambda b: b["events"].append({"name": "C", "properties": {"value": "x"}}),
            "events[1].properties.value: must be a number",
        ),
        (
            lambda b: b["events"].append(
                {"name": "F", "properties": {"eventType": "filter-items-v1", "filterType": "size"}}
            ),
            "events[1].properties: exactly one of filterNumericValue or filterStringValue is required",
        ),
        (
            lambda b: b["events"].append(
                {"name": "S", "properties": {"eventType": "sort-items-v1", "sortBy": "price", "sortOrder": "up"}}
            ),
            "events[1].properties.sortOrder: must be ASC or DESC",
        ),
        (
            lambda b: b["events"][0]["properties"].update(event_time="2024-06-21 12:36:40"),
            "events[0].properties.event_time: must be an ISO date-time with an offset",
        ),
        (lambda b: b.update(events=[]), "events: must contain at least one event"),
        (lambda b: b.update(events={}), "events: must be an array"),
        (lambda b: b.pop("context"), "context: required"),
        (lambda b: b["context"].pop("page"), "context.page: required"),
        (lambda b: b["context"]["page"].pop("location"), "context.page.location: required"),
        (
            lambda b: b["context"]["page"].update(type="home"),
            "context.page.type: must be one of HOMEPAGE, PRODUCT, CART, CATEGORY, SEARCH, OTHER",
        ),
        (lambda b: b["context"]["page"].update(data=["a", 1]), "context.page.data[1]: must be a string"),
        (lambda b: b["user"].update(id=100), "user.id: must be a string"),
        (lambda b: b["session"].update(custom=None), "session.custom: must be a string"),
    ],
)
def test_validation_errors_name_the_path(base: str, field: GravityFieldSandbox, change: Any, message: str) -> None:
    payload = copy.deepcopy(request_body())
    change(payload)
    response = post(base, payload)
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["type"]) == (422, "validation_error")
    assert body["message"].startswith(message)
    assert field.events == [] and field.counters["validation_errors"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"user": ', "body: malformed JSON"),
        (b'{"user": {}, "session": {}, "context": NaN}', "body: malformed JSON"),
        (b"[]", "body: must be an object"),
    ],
)
def test_malformed_bodies(base: str, raw: bytes, message: str) -> None:
    response = requests.post(base + "/ssapi/event", data=raw, headers=bearer(), timeout=5)
    assert response.status_code == 422 and response.json()["message"].startswith(message)


def test_page_endpoint(base: str, field: GravityFieldSandbox) -> None:
    page = {key: value for key, value in request_body().items() if key != "events"}
    first = post(base, page, path="/ssapi/page")
    assert first.status_code == 200
    assert first.json() == {"user": {"slid": "sandbox-slid-1"}, "session": {"sl": "sandbox-sl-2"}}
    known = dict(page, user={"slid": "a"}, session={"sl": "b"})
    assert post(base, known, path="/ssapi/page").json() == {"user": {"slid": None}, "session": {"sl": None}}
    bad = post(base, dict(page, context={"device": {}}), path="/ssapi/page")
    assert bad.status_code == 422 and bad.json()["message"] == "context.page: required"
    no_user = post(base, {"session": {}, "context": page["context"]}, path="/ssapi/page")
    assert no_user.json()["message"] == "user: required"
    assert field.pages == [page, known]
    assert field.counters["pages"] == 2 and field.events == []


def test_duplicate_purchases_are_counted(base: str, field: GravityFieldSandbox) -> None:
    post(base, request_body(purchase("t-1"), purchase("t-2")))
    post(base, request_body(purchase("t-1")))
    assert field.counters["duplicate_purchases"] == 1
    assert len(field.events) == 3


def test_rate_limit_per_key_and_window(base: str, control: str, field: GravityFieldSandbox, clock: FakeClock) -> None:
    reply = requests.post(f"{control}/faults", json={"rate_limit_per_second": 3}, timeout=5)
    assert reply.status_code == 200 and reply.json()["rate_limit_per_second"] == 3
    assert [post(base, request_body()).status_code for _ in range(3)] == [200, 200, 200]
    limited = post(base, request_body())
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert limited.json() == {
        "code": 429,
        "message": "rate limit of 3 requests per second exceeded",
        "type": "rate_limited",
    }
    assert post(base, request_body(), headers=bearer("other-key")).status_code == 200
    clock.now = T0 + 0.5
    assert post(base, request_body()).status_code == 429
    clock.now = T0 + 1.0
    assert post(base, request_body()).status_code == 200
    assert field.counters["rate_limited"] == 2 and field.counters["events"] == 5
    assert field.max_requests_in_window() == 6
    assert field.max_requests_in_window(0.25) == 5
    assert field.max_requests_in_window(2.0) == 7
    state = requests.get(f"{control}/state", params={"summary": "1"}, timeout=5).json()
    assert state["max_requests_in_window"] == 6 and state["request_count"] == 7
    assert requests.post(f"{control}/faults", json={"rate_limit_per_second": 0}, timeout=5).status_code == 400
    assert requests.post(f"{control}/faults", json={"rate_limit_per_second": None}, timeout=5).status_code == 200
    assert post(base, request_body()).status_code == 200
    assert requests.post(f"{control}/reset", timeout=5).json() == {"ok": True}
    assert field.rate_limit_per_second == 500 and field.max_requests_in_window() == 0


def test_fault_controls_over_http(base: str, control: str, field: GravityFieldSandbox) -> None:
    script = {"statuses": [{"status": 503, "retry_after": "2"}, {"status": 422, "body": {"code": 422}}, 500]}
    reply = requests.post(f"{control}/faults", json=script, timeout=5)
    assert reply.json()["faults"]["statuses"] == [{"status": 503, "retry_after": "2"}, {"status": 422}, {"status": 500}]
    first, second, third, fourth = (post(base, request_body(purchase(f"s{i}"))) for i in range(4))
    assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
    assert (second.status_code, second.json()) == (422, {"code": 422})
    assert third.status_code == 500 and fourth.status_code == 200
    assert [r["status"] for r in field.requests] == [503, 422, 500, 200]
    assert [r["event_count"] for r in field.requests] == [1, 1, 1, 1]

    requests.post(f"{control}/faults", json={"drop_connections": 1}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        post(base, request_body())
    assert field.requests[-1]["status"] is None and field.requests[-1]["auth"] == "bearer"

    requests.post(f"{control}/faults", json={"fail_all_status": 502}, timeout=5)
    assert [post(base, request_body()).status_code for _ in range(2)] == [502, 502]
    requests.post(f"{control}/faults", json={"fail_all_status": None, "latency_seconds": 0.2}, timeout=5)
    seen: list[int] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: seen.append(post(base, request_body()).status_code))
    worker.start()
    time.sleep(0.1)
    assert field.in_flight == 1
    worker.join(5)
    assert seen == [200] and time.monotonic() - started >= 0.2 and field.in_flight == 0

    refused = requests.post(f"{control}/faults", json={"event_error_prefix": "bad-"}, timeout=5)
    assert refused.status_code == 400 and "no per-event results" in refused.json()["error"]
    assert requests.post(f"{control}/faults", json={"nonsense": 1}, timeout=5).status_code == 400
    state = requests.get(f"{control}/state", timeout=5).json()
    assert state["faults"]["latency_seconds"] == 0.2 and state["events_stored"] == 2
    assert [stored["event"] for stored in state["events"]] == [purchase("s3"), purchase()]
    assert requests.post(f"{control}/reset", timeout=5).json() == {"ok": True}
    state = requests.get(f"{control}/state", timeout=5).json()
    assert (state["requests"], state["events"], state["pages"], state["faults"]["latency_seconds"]) == ([], [], [], 0.0)


def test_unknown_path_and_wrong_method(base: str, field: GravityFieldSandbox) -> None:
    unknown = post(base, request_body(), path="/ssapi/choose")
    assert unknown.status_code == 404 and unknown.json()["message"] == "no such endpoint: /ssapi/choose"
    wrong = requests.get(base + "/ssapi/event", headers=bearer(), timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert field.events == []


def test_sandbox_rules_say_whether_they_are_documented_or_assumed() -> None:
    """An operator reading a sandbox result must know which rules are the vendor's word and
    which the sandbox's guess (issue 9): the module and docs/vendors/gravity_field.md label them."""
    import conversion_relay.sandbox.gravity_field as module

    doc = module.__doc__ or ""
    assert "Documented (OpenAPI seed 003)" in doc and "Documented (seed 001): 500 requests" in doc
    assert "Assumed:" in doc and "429" in doc.split("Assumed:", 1)[1]
    page = (Path(__file__).parents[1] / "docs/vendors/gravity_field.md").read_text()
    assert "| 500 requests/s per key | documented: seed 001" in page
    assert "429 with `Retry-After: 1` | assumed" in page
