"""The Flask and FastAPI example apps (examples/) against a private Redis, and with the test double.

The Django example has tests/test_django_integration.py (Django's settings are process-wide).
"""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import redis

from conversion_relay import ConfigurationError, Relay
from conversion_relay.config.settings import Settings, settings_from_document
from conversion_relay.config.source import builtin_document
from conversion_relay.contrib.flask import ConversionRelay
from conversion_relay.store import backlog
from conversion_relay.store.keys import Keys
from tests.conftest import DATA_DB
from tests.support import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ORDER = {"email": "Anna.Meyer@Example.com", "sku": "SKU-1", "price": 49.5, "quantity": 2}


def example(monkeypatch: pytest.MonkeyPatch, directory: str, module: str) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES / directory))
    return importlib.import_module(module)


def sandbox_settings(url: str) -> Settings:
    return settings_from_document(builtin_document({}), {"REDIS_URL": url}, sandbox=True)


def stored_ids(data: redis.Redis, settings: Settings) -> dict[str, list[str]]:
    keys = Keys(settings.key_prefix)
    found = {}
    for name, dest in settings.destinations.items():
        entries = [backlog.read(f) for key in keys.streams(name, dest.parallel_drains) for _, f in data.xrange(key)]
        found[name] = [entry.canonical_event()["event_id"] for entry in entries]
    return found


# Flask


@pytest.fixture
def flask_shop(monkeypatch):
    return example(monkeypatch, "flask_app", "flask_shop")


@pytest.fixture
def flask_app(flask_shop, redis_server, data, tmp_path):
    return flask_shop.create_app(
        {"DATABASE": str(tmp_path / "shop.sqlite3"), "REDIS_URL": redis_server.url(DATA_DB), "TESTING": True}
    )


def orders(app) -> list[tuple]:
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute("SELECT id, sku, quantity FROM orders").fetchall()


def test_flask_an_order_is_committed_then_its_purchase_stored_for_every_destination(flask_shop, flask_app, data):
    response = flask_app.test_client().post("/orders", json=ORDER)
    assert response.status_code == 201, response.json
    assert response.json == {"order": 1, "event_ids": ["order-1"]}
    assert orders(flask_app) == [(1, "SKU-1", 2)]
    settings = flask_app.extensions["conversion_relay"].settings
    assert stored_ids(data, settings) == {name: ["order-1"] for name in settings.destinations}
    [fields] = [f for _, f in data.xrange(Keys(settings.key_prefix).stream("gravity"))]
    event = backlog.read(fields).canonical_event()
    assert event["custom_data"]["value"] == 99.0 and len(event["user_data"]["em"][0]) == 64


def test_flask_an_invalid_purchase_is_a_400_and_rolls_the_order_back(flask_app, data):
    response = flask_app.test_client().post("/orders", json={**ORDER, "currency": "EURO"})
    assert response.status_code == 400
    assert "custom_data.currency" in response.json["error"] and "EURO" not in response.json["error"]
    assert orders(flask_app) == []
    assert data.keys("*") == []


def test_flask_redis_down_keeps_the_order_and_says_the_conversion_needs_a_retry(flask_shop, tmp_path):
    app = flask_shop.create_app(
        {"DATABASE": str(tmp_path / "shop.sqlite3"), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/1"}
    )
    response = app.test_client().post("/orders", json=ORDER)
    assert response.status_code == 201
    assert response.json == {"order": 1, "event_ids": ["order-1"], "conversion": "not stored, retry"}
    assert orders(app) == [(1, "SKU-1", 2)]


def test_flask_the_extension_builds_one_relay_per_app_from_its_config(flask_shop, redis_server, tmp_path):
    first = flask_shop.create_app({"DATABASE": str(tmp_path / "1.sqlite3"), "REDIS_URL": redis_server.url(1)})
    second = flask_shop.create_app({"DATABASE": str(tmp_path / "2.sqlite3"), "REDIS_URL": redis_server.url(2)})
    for app, db in ((first, 1), (second, 2)):
        with app.app_context():
            assert isinstance(flask_shop.relay.relay, Relay)
            assert flask_shop.relay.relay.settings.redis_url == redis_server.url(db)
    with pytest.raises(RuntimeError, match="inside an app context"):
        _ = flask_shop.relay.relay
    bound = ConversionRelay(first)  # given the app: usable outside its context too
    assert bound.relay.settings.redis_url == redis_server.url(1)
    with pytest.raises(ConfigurationError, match="no file at"):
        flask_shop.create_app({"DATABASE": str(tmp_path / "3.sqlite3"), "CONVERSION_RELAY_CONFIG": "/nowhere.toml"})


def test_flask_the_test_double_takes_the_relays_place(flask_shop, tmp_path, conversion_relay_recorder):
    app = flask_shop.create_app({"DATABASE": str(tmp_path / "shop.sqlite3"), "REDIS_URL": "redis://nowhere.invalid:1"})
    client = app.test_client()
    assert client.post("/orders", json={**ORDER, "currency": "EURO"}).status_code == 400
    assert conversion_relay_recorder.calls == []
    assert client.post("/orders", json=ORDER).json == {"order": 1, "event_ids": ["order-1"]}
    assert conversion_relay_recorder.event_ids() == ["order-1"]
    assert conversion_relay_recorder.events("gravity")[0]["custom_data"]["order_id"] == "1"


# FastAPI


@pytest.fixture
def fastapi_shop(monkeypatch):
    return example(monkeypatch, "fastapi_app", "fastapi_shop")


def post_all(app, *bodies: dict) -> list[httpx.Response]:
    """POST each body to /orders at once, in one event loop, inside the app's lifespan (which
    opens and closes its AsyncRelay)."""

    async def main() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
                return await asyncio.gather(*(client.post("/orders", json=body) for body in bodies))

    return asyncio.run(main())


def test_fastapi_orders_store_their_purchases_through_the_asyncio_producer(fastapi_shop, redis_server, data):
    settings = sandbox_settings(redis_server.url(DATA_DB))
    app = fastapi_shop.create_app(settings)
    responses = post_all(app, ORDER, {**ORDER, "sku": "SKU-2"}, {**ORDER, "sku": "SKU-3"})
    assert [r.status_code for r in responses] == [201, 201, 201]
    bodies = [r.json() for r in responses]
    assert all(body["event_ids"] == [f"order-{body['order']}"] for body in bodies)
    assert sorted(app.state.orders) == [1, 2, 3]
    for name, ids in stored_ids(data, settings).items():
        assert sorted(ids) == ["order-1", "order-2", "order-3"], name


def test_fastapi_an_invalid_purchase_is_a_400_and_no_order_is_kept(fastapi_shop, redis_server, data):
    app = fastapi_shop.create_app(sandbox_settings(redis_server.url(DATA_DB)))
    refused, malformed = post_all(app, {**ORDER, "email": "not an address"}, {"sku": "SKU-1"})
    assert refused.status_code == 400
    assert "user_data.em" in refused.json()["detail"] and "not an address" not in refused.json()["detail"]
    assert malformed.status_code == 422  # FastAPI's own check of the body
    assert app.state.orders == {} and data.keys("*") == []


def test_fastapi_redis_down_keeps_the_order_and_says_the_conversion_needs_a_retry(fastapi_shop):
    app = fastapi_shop.create_app(sandbox_settings(f"redis://127.0.0.1:{free_port()}/1"))
    [response] = post_all(app, ORDER)
    assert response.json() == {"order": 1, "event_ids": ["order-1"], "conversion": "not stored, retry"}
    assert list(app.state.orders) == [1]


def test_fastapi_the_test_double_replaces_the_dependency(fastapi_shop, conversion_relay_recorder):
    app = fastapi_shop.create_app(sandbox_settings("redis://nowhere.invalid:1/0"))
    app.dependency_overrides[fastapi_shop.get_relay] = lambda: conversion_relay_recorder.aio
    refused, accepted = post_all(app, {**ORDER, "currency": "EURO"}, ORDER)
    assert refused.status_code == 400 and accepted.status_code == 201
    assert conversion_relay_recorder.event_ids("reco") == accepted.json()["event_ids"]
    assert list(app.state.orders) == [accepted.json()["order"]]
