"""Replaying a dead letter sends what the vendor expects, whatever the letter's reason.

Every test produces a real dead letter of one reason through the relay itself (a real worker,
or a real :class:`~conversion_relay.engine.drain.Drainer` in this process), replays it with
``Admin.replay(..., dry_run=False)`` while a real worker runs, and checks at the vendor sandbox
that the vendor received its own payload shape -- never the raw canonical event, whose
``page``, ``user_data.client_ip_address`` and ``user_data.browser_id`` are for other vendors --
that the letter left the store, and that nothing was dead-lettered again.

Letters that hold vendor payloads (``http_400``, ``too_large``, ``vendor_rejected_event``,
``retries_exhausted``) replay as a waiting batch; letters that hold stored entries
(``mapping_error``, ``redelivered_too_often``) must be mapped by the adapter again.  The two
raw-entry reasons run against the Gravity CAPI and Tracify (which refuses a canonical body).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from conversion_relay.engine.drain import Drainer
from conversion_relay.engine.runtime import runtime
from conversion_relay.store.deadletter import Selection
from conversion_relay.store.lease import Leases
from conversion_relay.vendors import adapter_for
from conversion_relay.vendors.gravity_capi import EVENT_FIELDS, USER_DATA_FIELDS
from tests.conftest import gravity_destination, tracify_destination
from tests.support import wait_for

GROUP = "relay"
#: What a canonical event carries for other vendors, which no Gravity CAPI event may hold.
CANONICAL_ONLY_USER_FIELDS = {"client_ip_address", "browser_id"}
TRACIFY_FIELDS = {"url", "customer_site_id", "identity_data", "datetime", "type", "data"}


def purchase(event_id: str, **custom: Any) -> dict[str, Any]:
    """A purchase every vendor here can express, with fields only some vendors take."""
    url = "https://shop.example/thank-you?utm_source=news"
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_source_url": url,
        "page": {"location": url, "referrer": "https://shop.example/cart", "type": "OTHER"},
        "user_data": {
            "em": [f"{event_id}@example.com"],
            "external_id": [f"user-{event_id}"],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "browser_id": f"browser-{event_id}",
        },
        "custom_data": {"value": 30.0, "currency": "EUR", "order_id": event_id, **custom},
    }


def letters(stack: Any, destination: str, reason: str | None = None) -> list[Any]:
    return [x for x in stack.dead_letters(destination) if reason is None or x.reason == reason]


def one_letter(stack: Any, destination: str, reason: str) -> Any:
    found = wait_for(lambda: letters(stack, destination, reason), timeout=30, what=f"a {reason} dead letter")
    stack.wait_settled(destination)
    assert [x.reason for x in letters(stack, destination)] == [reason]
    return found[0]


def assert_capi_shape(event: dict[str, Any]) -> None:
    """A Gravity Conversions API event: its fields only, nothing a canonical event adds."""
    assert set(event) <= set(EVENT_FIELDS), sorted(set(event) - set(EVENT_FIELDS))
    assert "page" not in event
    user_data = event.get("user_data", {})
    assert not CANONICAL_ONLY_USER_FIELDS & set(user_data), sorted(user_data)
    assert set(user_data) <= USER_DATA_FIELDS


def assert_tracify_shape(event: dict[str, Any]) -> None:
    assert set(event) == TRACIFY_FIELDS, sorted(event)
    assert event["type"] == "purchase" and sorted(event["identity_data"].values()) == [1, 2, 3, 4]


def mapped(stack: Any, destination: str, canonical: str) -> list[dict[str, Any]]:
    """What the destination's adapter makes of a stored canonical event."""
    adapter = adapter_for(stack.settings.destination(destination))
    return [json.loads(part.body) for part in adapter.map_event(json.loads(canonical))]


def replay_and_deliver(
    stack: Any, letter: Any, destination: str, received: Callable[[], list[dict[str, Any]]], count: int
) -> list[dict[str, Any]]:
    """Replay ``letter`` for real; return what the vendor then stored, once it is all there.

    Fails at once (not at a timeout) if the replay is dead-lettered again.
    """
    dead_before = stack.counters(destination)["dead_lettered"]
    assert stack.admin.replay(Selection(ids=(letter.id,)))["done"] == 0  # a dry run first
    result = stack.admin.replay(Selection(ids=(letter.id,)), dry_run=False)
    assert result["entries"] == result["done"] == 1
    assert stack.admin.letters.get(letter.id) is None
    wait_for(
        lambda: len(received()) >= count or letters(stack, destination),
        timeout=30,
        what="the replayed events at the vendor",
    )
    assert letters(stack, destination) == [], [(x.reason, x.excerpt) for x in letters(stack, destination)]
    stack.wait_settled(destination)
    assert letters(stack, destination) == []
    assert stack.counters(destination)["dead_lettered"] == dead_before
    events = received()
    assert len(events) == count
    return events


def capi_events(gravity: Any, *event_ids: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [e for e in gravity.events if e.get("event_id") in event_ids]


def tracify_events(tracify: Any, *order_ids: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [e for e in tracify.events if e.get("data", {}).get("order_id") in order_ids]


# --- letters that hold vendor payloads: replayed as a waiting batch ------------------------------


def test_http_400_letter_replays_the_capi_payload(make_stack, gravity):
    stack = make_stack()
    stack.start_worker()
    gravity.configure(statuses=[{"status": 400, "body": '{"error": "data: temporarily refused"}'}])
    stack.relay.enqueue([purchase("p-1"), purchase("p-2")], destinations=["gravity"])
    letter = one_letter(stack, "gravity", "http_400")
    assert letter.status == 400 and len(letter.parts) == 2 and gravity.events == []

    events = replay_and_deliver(stack, letter, "gravity", capi_events(gravity, "p-1", "p-2"), 2)
    for event in events:
        assert_capi_shape(event)
    assert sorted(events, key=lambda e: e["event_id"]) == [json.loads(p) for p in letter.parts]
    assert [r["status"] for r in gravity.requests] == [400, 200]


def test_too_large_letter_replays_once_the_limit_is_raised(make_stack, sandbox, gravity):
    """An event over ``max_bytes`` stays over it, so the replay happens under a configuration
    with a larger limit: two stacks on the same Redis data.  ``make_stack`` empties the data
    when it builds a stack, so both are built before anything is enqueued; the small stack's
    worker makes the letter and is stopped, then the large stack replays it and drains it."""
    small = make_stack(destinations={"gravity": gravity_destination(sandbox, max_bytes=1500)})
    large = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    worker = small.start_worker()
    huge = purchase("huge-1", content_name="y" * 450)
    huge["custom_data"]["contents"] = [{"id": f"sku-{n}", "quantity": 1, "title": "t" * 300} for n in range(4)]
    # enqueue refuses an event no request of the destination could carry; the large stack's
    # producer takes it, as before a limit was lowered, and the small stack's worker meets it.
    large.relay.enqueue([huge, purchase("p-1")], destinations=["gravity"])
    letter = one_letter(small, "gravity", "too_large")
    assert [json.loads(p)["event_id"] for p in letter.parts] == ["huge-1"]
    assert len(letter.parts[0]) > 1500
    wait_for(lambda: capi_events(gravity, "p-1")(), what="the event that fits")
    worker.stop()

    large.start_worker()
    (event,) = replay_and_deliver(large, letter, "gravity", capi_events(gravity, "huge-1"), 1)
    assert_capi_shape(event)
    assert event == json.loads(letter.parts[0])
    assert len(event["custom_data"]["contents"]) == 4


def test_vendor_rejected_event_letter_replays_the_capi_payload(make_stack, gravity):
    stack = make_stack()
    stack.start_worker()
    gravity.configure(event_error_prefix="bad-")
    stack.relay.enqueue([purchase("ok-1"), purchase("bad-1")], destinations=["gravity"])
    letter = one_letter(stack, "gravity", "vendor_rejected_event")
    assert [json.loads(p)["event_id"] for p in letter.parts] == ["bad-1"]
    assert "bad-" in letter.errors["0"]
    gravity.configure(event_error_prefix=None)

    (event,) = replay_and_deliver(stack, letter, "gravity", capi_events(gravity, "bad-1"), 1)
    assert_capi_shape(event)
    assert event == json.loads(letter.parts[0])
    assert gravity.counters["ok"] == 2 and gravity.counters["error"] == 1


def test_retries_exhausted_letter_replays_the_capi_payload(make_stack, gravity):
    stack = make_stack(relay={"retry_horizon_seconds": 1.0})
    stack.start_worker()
    gravity.configure(fail_all_status=503)
    stack.relay.enqueue([purchase("p-1"), purchase("p-2")], destinations=["gravity"])
    letter = one_letter(stack, "gravity", "retries_exhausted")
    assert letter.status == 503 and len(letter.parts) == 2
    gravity.configure(fail_all_status=None)

    events = replay_and_deliver(stack, letter, "gravity", capi_events(gravity, "p-1", "p-2"), 2)
    for event in events:
        assert_capi_shape(event)
    assert sorted(events, key=lambda e: e["event_id"]) == [json.loads(p) for p in letter.parts]


# --- letters that hold stored entries: mapped again on replay ------------------------------------

VENDORS = {
    "gravity": (gravity_destination, capi_events, assert_capi_shape),
    "tracify": (tracify_destination, tracify_events, assert_tracify_shape),
}


@pytest.fixture(params=sorted(VENDORS))
def vendor(request, sandbox):
    """One destination of a vendor, its sandbox (fresh), how to find and check what it got."""
    name = request.param
    build, finder, check = VENDORS[name]
    box = request.getfixturevalue(name)
    return name, {name: build(sandbox)}, (lambda *ids: finder(box, *ids)), check, box


def assert_raw_letter(letter: Any, event_id: str) -> str:
    """The letter holds the stored canonical event as it is; return it."""
    (raw,) = letter.parts
    stored = json.loads(raw)
    assert stored["event_id"] == event_id and stored["user_data"]["client_ip_address"] == "203.0.113.9"
    return raw


def drain_in_process(stack: Any, name: str, until: Callable[[], Any]) -> Any:
    """Run real drains of partition 0 here, each under a lease of its own, until ``until()``."""
    rt = runtime(stack.settings)
    leases = Leases(rt.redis, rt.keys)

    def one_drain() -> Any:
        token = uuid.uuid4().hex
        assert leases.acquire(name, 0, token, 10.0)
        Drainer(rt, name, token).run()
        return until()

    return wait_for(one_drain, timeout=30, interval=0.1, what="the in-process drain's dead letter")


def test_mapping_error_letter_is_mapped_again_on_replay(make_stack, monkeypatch, vendor):
    name, destinations, received, check, box = vendor
    stack = make_stack(destinations=destinations)
    stack.redis.xgroup_create(stack.keys.stream(name), GROUP, id="0", mkstream=True)
    stack.relay.enqueue([purchase("p-1")], destinations=[name])

    adapter = runtime(stack.settings).destination(name).adapter
    original, calls = adapter.map_event, []

    def fails_once(event):
        calls.append(event["event_id"])
        if len(calls) == 1:
            raise ValueError("a mapping bug, once")
        return original(event)

    monkeypatch.setattr(adapter, "map_event", fails_once)
    drain_in_process(stack, name, lambda: letters(stack, name, "mapping_error"))
    monkeypatch.undo()
    letter = one_letter(stack, name, "mapping_error")
    assert calls == ["p-1"] and letter.excerpt == "ValueError" and box.requests == []
    raw = assert_raw_letter(letter, "p-1")

    stack.start_worker()
    (event,) = replay_and_deliver(stack, letter, name, received("p-1"), 1)
    check(event)
    assert [event] == mapped(stack, name, raw)
    assert [r["status"] for r in box.requests] == [200]
    assert letter.entry_field == "c"


def test_redelivered_too_often_letter_is_mapped_again_on_replay(make_stack, vendor):
    """The entry is read (XREADGROUP) under a consumer of partition 0 that then vanishes, as a
    worker that keeps dying on it would; the worker's drain takes it over (delivery count 2,
    over ``max_deliveries = 1``) and dead-letters it unsent.  The replayed entry is a new
    stream entry, read once, so the same limit lets it through."""
    name, destinations, received, check, box = vendor
    stack = make_stack(relay={"max_deliveries": 1}, destinations=destinations)
    key = stack.keys.stream(name)
    stack.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
    stack.relay.enqueue([purchase("p-1")], destinations=[name])
    read = stack.redis.xreadgroup(GROUP, "0:a-crashed-drain", {key: ">"}, count=10)
    assert len(read[0][1]) == 1

    stack.start_worker()
    letter = one_letter(stack, name, "redelivered_too_often")
    assert "2 times" in letter.excerpt and box.requests == []
    raw = assert_raw_letter(letter, "p-1")

    (event,) = replay_and_deliver(stack, letter, name, received("p-1"), 1)
    check(event)
    assert [event] == mapped(stack, name, raw)
    assert [r["status"] for r in box.requests] == [200]
    assert letter.entry_field == "c"
