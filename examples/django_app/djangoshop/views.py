"""``POST /orders``: record the order and enqueue its Purchase, in one transaction.

The Purchase is checked at once (a bad one is a 400 and rolls the order back) and stored when
the transaction commits; when the payment is declined after it was enqueued, the transaction
rolls back and no vendor ever hears of the order.
"""

import json
from decimal import Decimal

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from conversion_relay import EventValidationError
from conversion_relay.contrib.django import enqueue_on_commit
from djangoshop.models import Order


class PaymentDeclined(Exception):
    pass


def purchase(order: Order) -> dict:
    """The order as a canonical Purchase event (docs/mapping.md)."""
    return {
        "event_name": "Purchase",
        "event_id": f"order-{order.pk}",
        "event_source_url": "https://shop.example/checkout",
        "user_data": {"em": [order.email]},
        "custom_data": {
            "value": order.value,
            "currency": order.currency,
            "order_id": str(order.pk),
            "contents": [{"id": order.sku, "quantity": order.quantity, "item_price": float(order.price)}],
        },
    }


def charge(order: Order, card: str) -> None:
    """The payment provider, reduced to its answer."""
    if card == "declined":
        raise PaymentDeclined


@require_POST
def checkout(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    try:
        with transaction.atomic():
            order = Order.objects.create(
                email=body["email"],
                sku=body["sku"],
                quantity=body.get("quantity", 1),
                price=Decimal(str(body["price"])),
                currency=body.get("currency", "EUR"),
            )
            event_ids = enqueue_on_commit(purchase(order))
            charge(order, body.get("card", "ok"))
    except EventValidationError as exc:  # the message names the field, never its value
        return JsonResponse({"error": str(exc)}, status=400)
    except PaymentDeclined:
        return JsonResponse({"error": "payment declined"}, status=402)
    return JsonResponse({"order": order.pk, "event_ids": event_ids}, status=201)
