"""The Django integration and its example app (examples/django_app) against a private Redis:
events enqueued in a transaction are checked at once and stored only when it commits."""

from __future__ import annotations

import json
from pathlib import Path

import django
import pytest
import redis
from django.core.management import call_command
from django.db import transaction
from django.test import Client, override_settings

from conversion_relay import ConfigurationError, EnqueueError, EventValidationError, Relay
from conversion_relay.config.settings import Settings
from conversion_relay.contrib import django as relay_django
from conversion_relay.store import backlog
from conversion_relay.store.keys import Keys
from tests.conftest import DATA_DB
from tests.support import free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "django_app"
ORDER = {"email": "Anna.Meyer@Example.com", "sku": "SKU-1", "price": 99.99, "quantity": 2}


@pytest.fixture(scope="module")
def django_shop(tmp_path_factory):
    """The example project, set up once per process (Django's settings are global)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLE))
        patch.setenv("DJANGO_SETTINGS_MODULE", "djangoshop.settings")
        patch.setenv("SHOP_DATABASE", str(tmp_path_factory.mktemp("django") / "shop.sqlite3"))
        django.setup()
        call_command("migrate", verbosity=0)
        from djangoshop.models import Order  # the example's app is importable only now

        yield Order


@pytest.fixture
def shop(django_shop, redis_server, data):
    """A test client of the example, its relay at the private Redis."""
    with override_settings(CONVERSION_RELAY={"CONFIG": "sandbox", "REDIS_URL": redis_server.url(DATA_DB)}):
        yield Client()
        relay_django.reset_relay()
    django_shop.objects.all().delete()


def relay_settings() -> Settings:
    return relay_django.get_relay().settings


def stored(data: redis.Redis, destination: str) -> list[backlog.StoredEntry]:
    settings = relay_settings()
    keys = Keys(settings.key_prefix)
    parts = settings.destination(destination).parallel_drains
    return [backlog.read(fields) for key in keys.streams(destination, parts) for _, fields in data.xrange(key)]


def stored_ids(data: redis.Redis) -> dict[str, list[str]]:
    return {
        name: [e.canonical_event()["event_id"] for e in stored(data, name)] for name in relay_settings().destinations
    }


def post(client: Client, body: dict) -> tuple[int, dict]:
    response = client.post("/orders", json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_an_order_stores_its_purchase_for_every_destination_when_it_commits(shop, django_shop, data):
    status, body = post(shop, ORDER)
    assert status == 201, body
    order = django_shop.objects.get()
    assert body == {"order": order.pk, "event_ids": [f"order-{order.pk}"]}
    assert stored_ids(data) == {name: [f"order-{order.pk}"] for name in relay_settings().destinations}
    [entry] = stored(data, "gravity")
    event = entry.canonical_event()
    assert event["custom_data"]["value"] == pytest.approx(199.98) and event["custom_data"]["order_id"] == str(order.pk)
    assert len(event["user_data"]["em"][0]) == 64 and b"anna" not in entry.raw.lower()


def test_a_declined_payment_rolls_the_order_back_and_stores_no_conversion(shop, django_shop, data):
    status, body = post(shop, {**ORDER, "card": "declined"})
    assert status == 402
    assert django_shop.objects.count() == 0
    assert stored_ids(data) == {name: [] for name in relay_settings().destinations}
    assert data.keys("*") == []  # not even a counter: the script never ran
    assert post(shop, ORDER)[0] == 201  # the relay works; it was the rollback


def test_an_invalid_purchase_is_refused_in_the_view_and_the_order_rolled_back(shop, django_shop, data):
    status, body = post(shop, {**ORDER, "currency": "EURO"})
    assert status == 400
    assert "custom_data.currency" in body["error"] and "nothing was enqueued" in body["error"]
    assert django_shop.objects.count() == 0
    assert data.keys("*") == []


def test_a_rolled_back_savepoint_drops_only_its_own_events(shop, data):
    with transaction.atomic():
        relay_django.enqueue_on_commit({"event_name": "Lead", "event_id": "kept"}, destinations=["gravity"])
        with pytest.raises(RuntimeError), transaction.atomic():
            relay_django.enqueue_on_commit({"event_name": "Lead", "event_id": "dropped"}, destinations=["gravity"])
            raise RuntimeError("the inner block fails")
        assert stored(data, "gravity") == []  # nothing before the commit
    assert [e.canonical_event()["event_id"] for e in stored(data, "gravity")] == ["kept"]

    with transaction.atomic():
        relay_django.enqueue_on_commit({"event_name": "Lead", "event_id": "rolled-back"}, destinations=["gravity"])
        transaction.set_rollback(True)
    assert [e.canonical_event()["event_id"] for e in stored(data, "gravity")] == ["kept"]


def test_outside_a_transaction_the_events_are_stored_at_once(shop, data):
    assert relay_django.enqueue_on_commit([{"event_name": "Lead"}], destinations=["tracify"]) == [
        e.canonical_event()["event_id"] for e in stored(data, "tracify")
    ]


def test_a_bad_event_raises_at_the_call_site_inside_the_transaction(shop, data):
    with pytest.raises(EventValidationError, match="user_data.em") as caught, transaction.atomic():
        relay_django.enqueue_on_commit({"event_name": "Lead", "user_data": {"em": ["anna.meyer@"]}})
    assert "anna.meyer@" not in str(caught.value) and caught.value.__context__ is None
    assert data.keys("*") == []


def test_redis_down_at_commit_raises_after_the_commit_with_the_ids_for_a_retry(shop, django_shop, caplog):
    down = {"CONFIG": "sandbox", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/1"}
    with override_settings(CONVERSION_RELAY=down):
        with pytest.raises(EnqueueError, match="nothing was enqueued") as caught, transaction.atomic():
            django_shop.objects.create(email="a@b.example", sku="SKU-1", price=5, currency="EUR")
            relay_django.enqueue_on_commit({"event_name": "Lead", "event_id": "lead-1"})
        assert caught.value.event_ids == ["lead-1"]
        assert django_shop.objects.count() == 1  # committed: the store comes after
        # robust=True: Django logs the failure and the block ends normally.
        with transaction.atomic():
            relay_django.enqueue_on_commit(
                {"event_name": "Lead", "event_id": "lead-2", "user_data": {"em": ["anna@example.com"]}}, robust=True
            )
    [record] = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], EnqueueError)]
    assert record.exc_info[1].event_ids == ["lead-2"] and "anna@example.com" not in caplog.text


def test_one_relay_per_process_built_from_django_settings(shop, redis_server):
    relay = relay_django.get_relay()
    assert isinstance(relay, Relay) and relay_django.get_relay() is relay
    assert relay.settings.redis_url == redis_server.url(DATA_DB) and relay.settings.key_prefix == "cr-sandbox"
    with override_settings(CONVERSION_RELAY={"CONFIG": "sandbox", "REDIS_URL": redis_server.url(2)}):
        assert relay_django.get_relay().settings.redis_url == redis_server.url(2)
    with override_settings(CONVERSION_RELAY={"CONFIG": "sandbox", "REDIS": "redis://x"}):
        with pytest.raises(ConfigurationError, match="unknown key REDIS; it takes CONFIG, REDIS_URL"):
            relay_django.get_relay()
    with override_settings(CONVERSION_RELAY={"CONFIG": "/nowhere/relay.toml"}):
        with pytest.raises(ConfigurationError, match="no file at"):
            relay_django.get_relay()


def test_the_test_double_takes_the_relays_place(django_shop, conversion_relay_recorder):
    """A host app's own test: no Redis, no vendor key, the same checks and the same rollback."""
    with override_settings(CONVERSION_RELAY={"CONFIG": "sandbox", "REDIS_URL": "redis://nowhere.invalid:1/0"}):
        client = Client()
        assert post(client, {**ORDER, "card": "declined"})[0] == 402
        assert post(client, {**ORDER, "currency": "EURO"})[0] == 400
        assert conversion_relay_recorder.calls == []
        status, body = post(client, ORDER)
    assert status == 201
    assert conversion_relay_recorder.event_ids() == body["event_ids"]
    assert conversion_relay_recorder.event_ids("gravity") == body["event_ids"]
    django_shop.objects.all().delete()
