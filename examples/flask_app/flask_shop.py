"""A one-route Flask shop (app factory): record the order, then enqueue its Purchase.

The Purchase is checked before the order is committed (``prepare``: a bad one is a 400 and the
order is rolled back) and stored right after the commit (``store``), so an order that was
never committed sends no conversion.  Run: ``flask --app flask_shop run``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, g, request

from conversion_relay import EnqueueError, EventValidationError
from conversion_relay.contrib.flask import ConversionRelay

relay = ConversionRelay()

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS orders "
    "(id INTEGER PRIMARY KEY, email TEXT, sku TEXT, quantity INT, price REAL, currency TEXT)"
)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        DATABASE=os.environ.get("SHOP_DATABASE", "shop.sqlite3"),
        # conversion_relay.contrib.flask reads these two; unset, the environment's are used.
        CONVERSION_RELAY_CONFIG=os.environ.get("CONVERSION_RELAY_CONFIG", "sandbox"),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    app.config.update(config or {})
    relay.init_app(app)
    app.teardown_appcontext(_close_db)
    app.add_url_rule("/orders", view_func=checkout, methods=["POST"])
    with app.app_context():
        db().execute(SCHEMA)
    return app


def db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"])
    return g.db


def _close_db(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def purchase(order_id: int, order: Mapping[str, Any]) -> dict[str, Any]:
    """The order as a canonical Purchase event (docs/mapping.md)."""
    return {
        "event_name": "Purchase",
        "event_id": f"order-{order_id}",
        "event_source_url": "https://shop.example/checkout",
        "user_data": {"em": [order["email"]]},
        "custom_data": {
            "value": order["price"] * order.get("quantity", 1),
            "currency": order.get("currency", "EUR"),
            "order_id": str(order_id),
            "contents": [{"id": order["sku"], "quantity": order.get("quantity", 1), "item_price": order["price"]}],
        },
    }


def checkout() -> tuple[dict[str, Any], int]:
    order = request.get_json()
    conn = db()
    try:
        with conn:  # commits, or rolls back on an exception
            cursor = conn.execute(
                "INSERT INTO orders (email, sku, quantity, price, currency) VALUES (?, ?, ?, ?, ?)",
                (order["email"], order["sku"], order.get("quantity", 1), order["price"], order.get("currency", "EUR")),
            )
            call = relay.relay.prepare(purchase(cursor.lastrowid, order))
    except EventValidationError as exc:  # the message names the field, never its value
        return {"error": str(exc)}, 400
    try:
        event_ids = relay.relay.store(call)
    except EnqueueError as exc:  # the order stands; exc.event_ids make a later retry safe
        return {"order": cursor.lastrowid, "event_ids": exc.event_ids, "conversion": "not stored, retry"}, 201
    return {"order": cursor.lastrowid, "event_ids": event_ids}, 201
