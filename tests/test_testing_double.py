"""The test double for host apps (``conversion_relay.testing``): the real checks, a record instead
of Redis, and the pytest fixture its entry point registers."""

from __future__ import annotations

import asyncio
import dataclasses
from importlib.metadata import entry_points

import pytest

from conversion_relay import BacklogFullError, ConfigurationError, EnqueueError, EventValidationError, Relay
from conversion_relay.config.settings import settings_from_document
from conversion_relay.config.source import builtin_document
from conversion_relay.store import backlog
from conversion_relay.store.keys import Keys
from conversion_relay.testing import RecordingRelay, installed, recording_settings
from tests.conftest import DATA_DB
from tests.fakes import FakeClock
from tests.support import UNUSED_REDIS

PURCHASE = {
    "event_name": "Purchase",
    "event_id": "order-1",
    "event_time": 1718973400,
    "user_data": {"em": ["Anna.Meyer@Example.com"], "ph": ["+4915112345678"], "external_id": ["42"]},
    "custom_data": {"value": 99.99, "currency": "EUR", "contents": [{"id": "SKU-1", "quantity": 1}]},
}

BAD_CALLS = [
    ([PURCHASE, {"event_name": "Purchase", "user_data": {"em": ["not an address"]}}], None),
    ({"event_name": "Purchase", "custom_data": {"currency": "EURO"}}, None),
    ({"event_name": "Lead", "client_context": {"width": float("nan")}}, None),
    ({"event_name": "Lead", "user_data": {"em": ["a@b.example"], "a@b.example": 1}}, None),
    ("Purchase", None),
    (PURCHASE, []),
    (PURCHASE, ["gravity", "gravity"]),
    (PURCHASE, ["nowhere"]),
    ([{"event_name": "Lead"}] * 2501, None),  # 10,004 entries for the four destinations
]


def frames(error):
    tb, found = error.__traceback__, []
    while tb is not None:
        found.append(tb.tb_frame)
        tb = tb.tb_next
    return found


def test_the_fixture_comes_from_the_entry_point_and_is_installed_for_the_test(conversion_relay_recorder):
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("conversion_relay") == "conversion_relay.testing.fixtures"
    assert installed() is conversion_relay_recorder
    assert set(conversion_relay_recorder.settings.destinations) == {"gravity", "field", "tracify", "reco"}
    assert not hasattr(conversion_relay_recorder, "redis")


def test_it_records_exactly_what_the_real_relay_stores(redis_server, data):
    """The same settings, the same call: the recorder's entries are the bytes Redis holds."""
    settings = settings_from_document(builtin_document({}), {"REDIS_URL": redis_server.url(DATA_DB)}, sandbox=True)
    events = [PURCHASE, {**PURCHASE, "event_id": "order-2", "user_data": {"external_id": ["43"]}}]
    recorder = RecordingRelay(settings)
    with Relay(settings) as relay:
        assert relay.enqueue(events) == recorder.enqueue(events) == ["order-1", "order-2"]
        assert relay.enqueue_native("reco", [{"itemId": "SKU-1"}], operation="addItems") == 1
    assert recorder.enqueue_native("reco", [{"itemId": "SKU-1"}], operation="addItems") == 1
    keys = Keys(settings.key_prefix)
    for name, dest in settings.destinations.items():
        in_redis = [
            backlog.read(fields) for key in keys.streams(name, dest.parallel_drains) for _, fields in data.xrange(key)
        ]
        assert sorted(in_redis, key=lambda e: e.raw) == sorted(recorder.stored[name], key=lambda e: e.raw), name
    assert recorder.event_ids("gravity") == ["order-1", "order-2"]
    assert recorder.events("gravity")[0]["user_data"]["em"][0] == recorder.events()[0]["user_data"]["em"][0]
    assert len(recorder.events("gravity")[0]["user_data"]["em"][0]) == 64  # hashed, as stored
    assert recorder.native("reco") == [("addItems", {"itemId": "SKU-1"})]
    assert recorder.native("gravity") == []


@pytest.mark.parametrize("events, destinations", BAD_CALLS)
def test_it_refuses_what_the_real_relay_refuses_with_the_same_error(events, destinations):
    settings = recording_settings()
    real = Relay(dataclasses.replace(settings, redis_url=UNUSED_REDIS))  # refuses before it connects
    with pytest.raises(EventValidationError) as expected:
        real.enqueue(events, destinations=destinations)
    recorder = RecordingRelay(settings)
    with pytest.raises(EventValidationError) as caught:
        recorder.enqueue(events, destinations=destinations)
    assert type(caught.value) is type(expected.value)
    assert str(caught.value) == str(expected.value) and caught.value.messages == expected.value.messages
    # Leaves no way back to the plaintext: nothing chained, and enqueue's frame dropped the events.
    assert caught.value.__context__ is None
    [test_frame, enqueue_frame] = frames(caught.value)
    assert enqueue_frame.f_code.co_name == "enqueue" and "events" not in enqueue_frame.f_locals
    assert all(entries == [] for entries in recorder.stored.values()) and recorder.calls == []
    with pytest.raises(EventValidationError) as explained:
        recorder.explain(events, destinations=destinations)
    assert str(explained.value) == str(expected.value)


def test_a_full_destination_refuses_alone_as_in_redis():
    document = builtin_document({})
    document["destinations"]["tracify"]["max_backlog_events"] = 3
    recorder = RecordingRelay(document=document)
    recorder.enqueue({"event_name": "Lead", "event_id": "waiting"}, destinations=["tracify"])
    events = [{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(3)]
    with pytest.raises(BacklogFullError) as caught:
        recorder.enqueue(events, destinations=["gravity", "tracify"])
    assert caught.value.full == {"tracify": 1} and caught.value.stored_in == ("gravity",)
    assert "max_backlog_events 3" in str(caught.value)
    assert recorder.event_ids("gravity") == ["lead-0", "lead-1", "lead-2"]
    assert recorder.event_ids("tracify") == ["waiting"]
    assert [r.stored_in for r in recorder.calls] == [("tracify",), ("gravity",)]


def test_the_same_call_within_the_dedup_window_is_recorded_once():
    clock = FakeClock(1000.0)
    recorder = RecordingRelay(clock=clock)
    assert recorder.enqueue(PURCHASE, destinations=["gravity"]) == ["order-1"]
    assert recorder.enqueue(PURCHASE, destinations=["gravity"]) == ["order-1"]
    assert recorder.enqueue(PURCHASE, destinations=["gravity", "reco"]) == ["order-1"]
    assert recorder.event_ids("gravity") == ["order-1"] and recorder.event_ids("reco") == ["order-1"]
    clock.now += recorder.settings.enqueue_dedup_seconds + 1
    recorder.enqueue(PURCHASE, destinations=["gravity"])
    assert recorder.event_ids("gravity") == ["order-1", "order-1"]
    assert recorder.event_ids() == ["order-1", "order-1", "order-1"]  # one per call that stored


def test_fail_next_raises_after_the_checks_and_records_nothing():
    recorder = RecordingRelay()
    recorder.fail_next(EnqueueError("Redis at test:0 could not be reached; nothing was enqueued."))
    with pytest.raises(EventValidationError):  # the checks come first, and keep the failure
        recorder.enqueue({"event_name": "Purchase", "custom_data": {"currency": "EURO"}})
    with pytest.raises(EnqueueError, match="could not be reached"):
        recorder.enqueue(PURCHASE)
    assert recorder.events() == []
    assert recorder.enqueue(PURCHASE) == ["order-1"]


def test_settings_come_from_a_document_or_a_toml_file_and_need_no_vendor_key(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOP_GRAVITY_KEY", raising=False)
    path = tmp_path / "relay.toml"
    path.write_text(
        '[relay]\nkey_prefix = "shop"\n\n[destinations.capi]\nvendor = "gravity_capi"\n'
        'base_url = "https://api.trygravity.ai"\napi_key_env = "SHOP_GRAVITY_KEY"\nmax_events = 500\n'
    )
    recorder = RecordingRelay(document=path)
    assert set(recorder.stored) == {"capi"} and recorder.settings.key_prefix == "shop"
    assert recorder.enqueue(PURCHASE) == ["order-1"] and recorder.event_ids("capi") == ["order-1"]
    with pytest.raises(ConfigurationError, match="not configured"):
        recorder.events("gravity")
    with pytest.raises(ConfigurationError, match="max_events"):
        RecordingRelay(document={"destinations": {"capi": {"vendor": "gravity_capi", "max_events": 5000}}})


def test_the_asyncio_view_records_into_the_same_recorder():
    recorder = RecordingRelay()

    async def use(relay):
        async with relay:
            ids = await relay.enqueue(PURCHASE, destinations=["gravity"])
            count = await relay.enqueue_native("reco", {"itemId": "SKU-9"}, operation="addItems")
            with pytest.raises(EventValidationError) as caught:
                await relay.enqueue({"event_name": "Purchase", "user_data": {"em": ["nope"]}})
            return ids, count, caught.value

    ids, count, error = asyncio.run(use(recorder.aio))
    assert ids == ["order-1"] and count == 1
    assert recorder.event_ids("gravity") == ["order-1"] and recorder.native("reco") == [
        ("addItems", {"itemId": "SKU-9"})
    ]
    assert "nope" not in str(error) and error.__context__ is None


def test_install_nests_and_undoes_itself():
    outer, inner = RecordingRelay(), RecordingRelay()
    assert installed() is None
    with outer.install():
        with inner.install():
            assert installed() is inner
        assert installed() is outer
    assert installed() is None


class TestAHostsOwnConfiguration:
    """A host app overrides ``conversion_relay_settings`` to check against its own file."""

    @pytest.fixture
    def conversion_relay_settings(self):
        return recording_settings({"destinations": {"capi": {"vendor": "gravity_capi", "max_bytes": 2000}}})

    def test_the_recorder_checks_against_it(self, conversion_relay_recorder):
        assert set(conversion_relay_recorder.stored) == {"capi"}
        with pytest.raises(EventValidationError, match="above its max_bytes of 2,000"):
            conversion_relay_recorder.enqueue({"event_name": "Lead", "client_context": {"pad": "x" * 3000}})
