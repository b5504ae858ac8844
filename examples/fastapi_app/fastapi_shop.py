"""A one-endpoint FastAPI shop on the asyncio producer (``AsyncRelay``).

The relay is opened in the app's lifespan (one per process and event loop) and handed to the
endpoint by a dependency, which a test replaces (``app.dependency_overrides[get_relay]``).
Run: ``uvicorn fastapi_shop:app``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from conversion_relay import AsyncRelay, EnqueueError, EventValidationError
from conversion_relay.config.settings import Settings


class Order(BaseModel):
    email: str
    sku: str
    price: float
    quantity: int = 1
    currency: str = "EUR"


def purchase(order_id: int, order: Order) -> dict[str, Any]:
    """The order as a canonical Purchase event (docs/mapping.md)."""
    return {
        "event_name": "Purchase",
        "event_id": f"order-{order_id}",
        "event_source_url": "https://shop.example/checkout",
        "user_data": {"em": [order.email]},
        "custom_data": {
            "value": order.price * order.quantity,
            "currency": order.currency,
            "order_id": str(order_id),
            "contents": [{"id": order.sku, "quantity": order.quantity, "item_price": order.price}],
        },
    }


def get_relay(request: Request) -> AsyncRelay:
    return request.app.state.relay


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; ``settings`` None: the relay's settings from the environment, at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncRelay(settings) as relay:
            app.state.relay = relay
            yield

    app = FastAPI(lifespan=lifespan)
    app.state.orders = {}
    numbers = itertools.count(1)

    @app.post("/orders", status_code=201)
    async def checkout(order: Order, relay: Annotated[AsyncRelay, Depends(get_relay)]) -> dict[str, Any]:
        order_id = next(numbers)
        try:
            call = relay.prepare(purchase(order_id, order))  # checked before the order is kept
        except EventValidationError as exc:  # the message names the field, never its value
            raise HTTPException(status_code=400, detail=str(exc)) from None
        app.state.orders[order_id] = order
        try:
            event_ids = await relay.store(call)
        except EnqueueError as exc:  # the order stands; exc.event_ids make a later retry safe
            return {"order": order_id, "event_ids": exc.event_ids, "conversion": "not stored, retry"}
        return {"order": order_id, "event_ids": event_ids}

    return app


app = create_app()
