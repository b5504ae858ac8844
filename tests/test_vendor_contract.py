"""The contract every registered vendor keeps (issue 10), parametrized over the registry, so a
fifth vendor is held to it by adding its modules, not by editing this file.

Each vendor: its sandbox is registered and mounted; the built-in configuration reaches it; a
realistic canonical event and the vendor's published native example become request bodies its
sandbox accepts over loopback; and 200, 413, 429 and 400 come to the outcome the engine acts on
(without Celery: the adapter's own response handling and the engine's split rule).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import requests

import conversion_relay.sandbox as sandbox_package
import conversion_relay.schemas as schemas_package
import conversion_relay.vendors as vendors_package
from bench.harness import Sink, relay_env
from conversion_relay.config import source
from conversion_relay.config.settings import load_settings
from conversion_relay.demo import inject_faults
from conversion_relay.engine.delivery import Delivery
from conversion_relay.ops import personal
from conversion_relay.outcomes import DONE_STATUSES, Accepted, Rejected, RetryLater, TooLarge
from conversion_relay.sandbox import VENDOR_SANDBOXES, SandboxServer, mounted_sandboxes, sandbox_classes
from conversion_relay.schemas.canonical import canonical_schema
from conversion_relay.vendors import adapter_classes, adapter_for
from conversion_relay.vendors.base import Part, VendorAdapter
from tests.support import UNUSED_REDIS

VENDORS = sorted(adapter_classes())
FIXTURES = Path(__file__).parent / "fixtures"
#: Each vendor's published example (tests/fixtures/README.md) and the operation it is sent as.
#: A vendor whose adapter takes native payloads adds its example here, with its other tests.
NATIVE_EXAMPLES: dict[str, tuple[str, str | None]] = {
    "gravity_capi": ("gravity_capi_seed_example.json", None),
    "gravity_field": ("gravity_field/purchase_request.json", None),
    "gravity_reco": ("gravity_reco/add_events.json", "addEvents"),
    "tracify": ("tracify/purchase.json", None),
}

#: An order as a shop's backend sends it: the ids, client IP and user agent, value, currency,
#: line items and the absolute URL every vendor needs some of.
ORDER: dict[str, Any] = {
    "event_name": "Purchase",
    "event_time": 1_767_000_000,
    "event_id": "order-4711",
    "action_source": "website",
    "event_source_url": "https://shop.example/checkout/thanks?utm_source=gravity",
    "user_data": {
        "em": ["Erika.Mustermann@example.com"],
        "ph": ["+49 151 2345678"],
        "external_id": ["customer-42"],
        "client_ip_address": "203.0.113.7",
        "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        "session_id": "session-9",
        "visitor_id": "gr-visitor-77",
        "grclid": "gr-click-1",
    },
    "custom_data": {
        "value": 59.8,
        "currency": "EUR",
        "order_id": "4711",
        "contents": [
            {"id": "SKU-1", "quantity": 2, "item_price": 19.9},
            {"id": "SKU-2", "quantity": 1, "item_price": 20.0},
        ],
    },
}


@pytest.fixture(scope="module")
def server() -> Any:
    with SandboxServer({prefix: factory() for prefix, factory in VENDOR_SANDBOXES.items()}) as running:
        yield running


def adapter_at(server: SandboxServer, vendor: str) -> VendorAdapter:
    """The vendor's adapter as the built-in configuration sets it up, pointed at ``server``."""
    env = {"CONVERSION_RELAY_CONFIG": "sandbox", "CONVERSION_RELAY_SANDBOX_URL": server.url, "REDIS_URL": UNUSED_REDIS}
    (destination,) = [d for d in load_settings(env).destinations.values() if d.vendor == vendor]
    return adapter_for(destination)


def send(adapter: VendorAdapter, parts: list[Part]) -> list[tuple[int, Any]]:
    """Every request the parts make (one per group), sent over loopback; the outcomes."""
    groups: dict[str, list[bytes]] = {}
    for part in parts:
        groups.setdefault(part.group, []).append(part.body)
    outcomes = []
    for group, bodies in groups.items():
        body = adapter.body_for(group, bodies)
        orjson.loads(body)  # every vendor takes JSON (RECO an array, the others an object)
        request = adapter.request_for(group, body)
        response = requests.request(
            request.method, request.url, headers=dict(request.headers), params=request.params, data=body, timeout=10
        )
        outcome = adapter.interpret(response.status_code, response.headers, response.content, bodies)
        outcomes.append((response.status_code, outcome, response.text[:300], len(bodies)))
    return outcomes


def assert_delivered(outcomes: list[tuple[int, Any, str, int]]) -> None:
    assert outcomes, "no request was made"
    for status, outcome, text, count in outcomes:
        assert isinstance(outcome, Accepted), (status, outcome, text)
        assert len(outcome.statuses) == count and set(outcome.statuses) <= DONE_STATUSES, (outcome, text)
        assert not outcome.errors, outcome


def engine_splits(adapter: VendorAdapter, outcome: Any) -> bool:
    """The delivery engine's own rule (split, or settle the outcome), without a running drain."""
    return Delivery._splits(SimpleNamespace(dest=SimpleNamespace(adapter=adapter)), outcome)  # type: ignore[arg-type]


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_sandbox_is_registered_and_serves_its_mount(vendor: str, server: SandboxServer):
    stand_in = sandbox_classes().get(vendor)
    assert stand_in is not None, f"{vendor}: add its sandbox module to conversion_relay/sandbox/"
    assert VENDOR_SANDBOXES[stand_in.mount_prefix] is stand_in
    mounted = server.vendor(stand_in.mount_prefix)
    assert type(mounted) is stand_in and mounted.vendor == vendor
    state = requests.get(f"{server.url}/_sandbox/{stand_in.mount_prefix}/state", timeout=5)
    assert state.status_code == 200 and "request_count" in state.json()


def test_mounts_are_distinct_and_every_sandbox_has_an_adapter():
    classes = sandbox_classes()
    assert sorted(classes) == VENDORS
    assert len({cls.mount_prefix for cls in classes.values()}) == len(classes)
    assert all(cls.mount_prefix and "/" not in cls.mount_prefix for cls in classes.values())


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_builtin_configuration_reaches_the_sandbox(vendor: str, server: SandboxServer):
    adapter = adapter_at(server, vendor)
    stand_in = sandbox_classes()[vendor]
    assert adapter.destination.name == adapter.default_destination_name
    assert adapter.destination.base_url == f"{server.url}/{stand_in.mount_prefix}{stand_in.base_path}"


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_realistic_order_is_accepted_by_the_sandbox(vendor: str, server: SandboxServer):
    adapter = adapter_at(server, vendor)
    sandbox = server.vendor(sandbox_classes()[vendor].mount_prefix)
    sandbox.reset()
    stored = orjson.loads(orjson.dumps(canonical_schema().load(copy.deepcopy(ORDER))))
    parts = adapter.map_event(stored)
    assert parts, f"{vendor}: the order maps to nothing"
    assert_delivered(send(adapter, parts))
    counted = sum(record["event_count"] or 0 for record in sandbox.state()["requests"])
    assert counted == len(parts)
    assert b"Erika" not in b"".join(p.body for p in parts) and b"2345678" not in b"".join(p.body for p in parts)


@pytest.mark.parametrize("vendor", VENDORS)
def test_erasure_finds_the_person_in_every_part_the_vendor_is_sent(vendor: str, server: SandboxServer):
    """What a vendor is sent waits in batches and dead letters: erasure must recognise the
    person there, whichever field the vendor carries them in (its adapter's ``person_values``
    and ``person_aliases``)."""
    adapter = adapter_at(server, vendor)
    stored = orjson.loads(orjson.dumps(canonical_schema().load(copy.deepcopy(ORDER))))
    erika = personal.person(email="erika.mustermann@example.com", phone="+49 151 2345678", external_id="customer-42")
    for part in adapter.map_event(stored):
        assert personal.is_theirs(part.body, erika.needles, part.group), (vendor, part)
    stranger = personal.person(email="someone.else@example.com", phone="+49 151 7654321", external_id="c-7").needles
    assert not any(personal.is_theirs(p.body, stranger, p.group) for p in adapter.map_event(stored))


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_published_native_example_is_accepted_by_the_sandbox(vendor: str, server: SandboxServer):
    adapter = adapter_at(server, vendor)
    if type(adapter).load_native is VendorAdapter.load_native:
        pytest.skip(f"{vendor} takes canonical events only")
    assert vendor in NATIVE_EXAMPLES, f"{vendor}: add its published example to NATIVE_EXAMPLES"
    path, operation = NATIVE_EXAMPLES[vendor]
    payload = json.loads((FIXTURES / path).read_text())
    items = orjson.loads(orjson.dumps(adapter.load_native(payload, operation, phone_region="DE")))
    parts = [part for item in items for part in adapter.map_native(item, operation)]
    assert_delivered(send(adapter, parts))


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_sink_answer_counts_as_delivered(vendor: str, server: SandboxServer):
    """bench/sink.py answers with ``accepting_response``: the relay must read it as delivered."""
    adapter = adapter_at(server, vendor)
    sandbox = sandbox_classes()[vendor]()
    stored = orjson.loads(orjson.dumps(canonical_schema().load(copy.deepcopy(ORDER))))
    for group in {part.group for part in adapter.map_event(stored)}:
        bodies = [part.body for part in adapter.map_event(stored) if part.group == group]
        path = adapter.request_for(group, adapter.body_for(group, bodies)).url.split(server.url, 1)[1]
        path = path.split("?", 1)[0].removeprefix("/" + sandbox.mount_prefix)
        count = sandbox.count_events(path, adapter.body_for(group, bodies))
        assert count == len(bodies)
        status, headers, body = sandbox.accepting_response(path, count)
        outcome = adapter.interpret(status, headers, body, bodies)
        assert isinstance(outcome, Accepted) and set(outcome.statuses) <= DONE_STATUSES and not outcome.errors


def refused(status: int, retry_after: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return status, headers, json.dumps({"error": f"sandbox: injected HTTP {status}"}).encode()


@pytest.mark.parametrize("vendor", VENDORS)
def test_answers_come_to_the_outcome_the_engine_acts_on(vendor: str, server: SandboxServer):
    adapter = adapter_at(server, vendor)
    stored = orjson.loads(orjson.dumps(canonical_schema().load(copy.deepcopy(ORDER))))
    bodies = [part.body for part in adapter.map_event(stored)]
    two = bodies + bodies if len(bodies) == 1 else bodies

    too_large = adapter.interpret(*refused(413), two)
    assert isinstance(too_large, TooLarge) and engine_splits(adapter, too_large)

    throttled = adapter.interpret(*refused(429, retry_after="7"), two)
    assert isinstance(throttled, RetryLater) and throttled.retry_after_seconds == 7.0

    bad = adapter.interpret(*refused(400), two)
    assert isinstance(bad, Rejected) and bad.status == 400
    # A vendor with no per-event results judges a request whole: the engine splits it to find
    # the refused event.  One that answers per event refused the request itself: dead letter.
    # (The sandbox says which kind of vendor it stands in for, independently of the adapter.)
    whole = not sandbox_classes()[vendor].per_event_results
    assert engine_splits(adapter, bad) is whole
    assert not engine_splits(adapter, adapter.interpret(*refused(401), two))


def test_an_unregistered_vendor_stops_the_builtin_configuration(monkeypatch: pytest.MonkeyPatch):
    """A vendor with an adapter and no sandbox is named, not silently left out."""
    partial = {vendor: cls for vendor, cls in sandbox_classes().items() if vendor != VENDORS[0]}
    monkeypatch.setattr(source, "sandbox_classes", lambda: partial)
    with pytest.raises(Exception, match=f"{VENDORS[0]}: no sandbox stands in"):
        source.builtin_document({})


#: Places outside vendors/, schemas/, sandbox/ (and tests/, docs/) that may name a vendor or a
#: sandbox mount outright, and why each must.
NAMES_ALLOWED: dict[str, str] = {
    "conversion_relay/config/settings.py": "the module docstring's example destination table",
    "conversion_relay/cli/erase.py": "an example of the output, naming destinations of the example configuration",
    "conversion_relay/cli/commands.py": "help text: --destination examples from the example configuration",
    "conversion_relay/cli/explain.py": "help text: --destination examples from the example configuration",
    "bench/harness.py": "NAIVE_VENDOR: the naive baseline (bench/naive.py) is a relay of that one vendor",
    "bench/__main__.py": "the relay-versus-naive runs count the naive baseline's vendor at the sink",
    "bench/latency.py": "the latency run is the relay-versus-naive single-event run",
    "bench/chaos/scenarios.py": "each chaos scenario is a fault at a named vendor (bench/results record them)",
    "bench/chaos/vendor.py": "the chaos log reads each vendor's own event ids out of its request bodies",
    "deploy/conversion-relay.example.toml": "the example configuration shows real destinations, which name their "
    "vendor (tests/test_deploy.py checks each is registered)",
}
ROOT = Path(__file__).resolve().parents[1]
VENDOR_PARTS = ("vendors", "schemas", "sandbox")


def named_outright() -> dict[str, list[str]]:
    names = set(sandbox_classes()) | set(adapter_classes()) | {cls.mount_prefix for cls in sandbox_classes().values()}
    pattern = re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?!\w)")
    files = [p for p in (ROOT / "conversion_relay").rglob("*") if p.is_file() and p.suffix in (".py", ".toml", ".lua")]
    files = [p for p in files if p.relative_to(ROOT / "conversion_relay").parts[0] not in VENDOR_PARTS]
    files += list((ROOT / "bench").rglob("*.py")) + [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    found: dict[str, list[str]] = {}
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.setdefault(str(path.relative_to(ROOT)), []).append(f"{number}: {line.strip()}")
    return found


def test_no_module_outside_the_vendor_parts_names_a_vendor():
    """What adding a vendor takes (docs/design.md, Adding a vendor) stays true: the demo, the
    bench harness and sink, the configuration and the engine take vendors from the registries."""
    found = named_outright()
    unexpected = {path: lines for path, lines in found.items() if path not in NAMES_ALLOWED}
    assert unexpected == {}, "take the vendor from the registry (or justify it in NAMES_ALLOWED)"
    assert sorted(set(NAMES_ALLOWED) - set(found)) == [], "drop allow-list entries that no longer name a vendor"


FIFTH_SCHEMA = """
from marshmallow import Schema, fields


class AcmeEventSchema(Schema):
    name = fields.String(required=True)
    id = fields.String(required=True)
"""
FIFTH_ADAPTER = """
from conversion_relay.outcomes import Accepted
from conversion_relay.schemas.acme import AcmeEventSchema
from conversion_relay.vendors.base import Part, Request, VendorAdapter, encode


class AcmeAdapter(VendorAdapter):
    vendor = "acme"
    title = "Acme Tracking"
    default_destination_name = "acme"
    default_base_url = "https://api.acme.example"

    def map_event(self, event):
        return [Part("", encode(AcmeEventSchema().load({"name": event["event_name"], "id": event["event_id"]})))]

    def envelope(self, group):
        return b'{"events":[', b"]}"

    def request_for(self, group, body):
        headers = {"Authorization": f"Bearer {self.destination.api_key}", "Content-Type": "application/json"}
        return Request("POST", self.destination.base_url + "/track", headers, body)

    def interpret_success(self, status, body, parts):
        return Accepted(statuses=["ok"] * len(parts))
"""
FIFTH_SANDBOX = """
import json

from conversion_relay.sandbox.base import SandboxBase, header, json_response, list_length


class AcmeSandbox(SandboxBase):
    vendor = "acme"
    mount_prefix = "acme"
    base_path = "/v1"
    destination_options = {"max_events": 10}

    def _auth_label(self, query, headers):
        return "bearer" if header(headers, "Authorization") else None

    def count_events(self, path, body):
        return list_length(body, "events")

    def accepting_response(self, path, count):
        return json_response(200, {"accepted": count})

    def handle(self, method, path, query, headers, body):
        ok = path == "/v1/track" and header(headers, "Authorization") == "Bearer sandbox-key"
        count = self.count_events(path, body) if ok else None
        response = json_response(200, {"accepted": count}) if ok and count else json_response(400, {"error": path})
        self._record(method, path, query, self._auth_label(query, headers), count, len(body), response[0])
        return response
"""


@pytest.fixture
def fifth_vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A throwaway vendor made of an adapter, a schema and a sandbox module and nothing else,
    found where a real one would be (each package's module path)."""
    for package, source_text in ((vendors_package, FIFTH_ADAPTER), (schemas_package, FIFTH_SCHEMA),
                                 (sandbox_package, FIFTH_SANDBOX)):  # fmt: skip
        where = tmp_path / package.__name__.rpartition(".")[2]
        where.mkdir()
        (where / "acme.py").write_text(source_text)
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(where)])
    for name in ("conversion_relay.vendors.acme", "conversion_relay.schemas.acme", "conversion_relay.sandbox.acme"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    adapter_classes.cache_clear()
    sandbox_classes.cache_clear()
    yield "acme"
    adapter_classes.cache_clear()
    sandbox_classes.cache_clear()


def test_a_fifth_vendor_is_its_modules_and_nothing_else(fifth_vendor: str, tmp_path: Path):
    """The registries, the built-in configuration, the sandbox server, the demo's faults and the
    bench configuration all pick up a vendor that exists only as its three modules."""
    assert fifth_vendor in adapter_classes() and fifth_vendor in sandbox_classes()
    with SandboxServer(mounted_sandboxes()) as running:
        adapter = adapter_at(running, fifth_vendor)
        assert adapter.destination.base_url == f"{running.url}/acme/v1" and adapter.destination.max_events == 10
        stored = orjson.loads(orjson.dumps(canonical_schema().load(copy.deepcopy(ORDER))))
        assert_delivered(send(adapter, adapter.map_event(stored)))
        assert running.vendor("acme").state()["requests"][0]["event_count"] == 1
        inject_faults([running.vendor("acme")])
        assert running.vendor("acme").faults.snapshot()["statuses"] == [{"status": 503}]

    class FakeSink:
        url = "http://127.0.0.1:9"
        url_for = Sink.url_for

    env = relay_env(SimpleNamespace(url=lambda db: UNUSED_REDIS), FakeSink(), tmp_path)  # type: ignore[arg-type]
    settings = load_settings(env)
    assert settings.destination("acme").base_url == "http://127.0.0.1:9/acme/v1"
