"""Made-up conversions for the demo and the benchmarks: realistic in shape, personal data
included (the relay hashes it), reproducible from a seed."""

from __future__ import annotations

import random
import time
from typing import Any

FIRST_NAMES = ("Anna", "Ben", "Chloé", "Dmitri", "Elif", "Farah", "Giulia", "Hugo", "Ines", "Jonas")
LAST_NAMES = ("Meyer", "Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka", "Usman", "Vogel")
EVENTS = (
    ("Purchase", 0.35),
    ("AddToCart", 0.15),
    ("ViewContent", 0.15),
    ("PageView", 0.1),
    ("InitiateCheckout", 0.1),
    ("Lead", 0.1),
    ("CompleteRegistration", 0.05),
)
PAGES = {"Purchase": "/checkout/thank-you", "ViewContent": "/p/{sku}", "AddToCart": "/p/{sku}", "PageView": "/"}


def conversion(rng: random.Random, n: int, *, now: int | None = None) -> dict[str, Any]:
    """One canonical event as a shop's backend would send it."""
    name = rng.choices([e for e, _ in EVENTS], [w for _, w in EVENTS])[0]
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    items = [
        {
            "id": f"SKU-{rng.randint(1000, 9999)}",
            "quantity": rng.randint(1, 3),
            "item_price": round(rng.uniform(5, 120), 2),
        }
        for _ in range(rng.randint(1, 4))
    ]
    attributed = rng.random() < 0.4
    path = PAGES.get(name, "/checkout").format(sku=items[0]["id"])
    event: dict[str, Any] = {
        "event_name": name,
        "event_time": (now or int(time.time())) - rng.randint(0, 300),
        "event_id": f"order-{n}" if name == "Purchase" else f"evt-{n}",
        "action_source": "website",
        "event_source_url": f"https://shop.example{path}"
        + ("?utm_source=gravity&utm_medium=cpc" if attributed else ""),
        "user_data": {
            "em": [f"{first}.{last}{n}@example.com".lower()],
            "ph": [f"+49 151 {rng.randint(1000000, 9999999)}"],
            "fn": first,
            "ln": last,
            "external_id": [str(10000 + n)],
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "client_ip_address": f"203.0.113.{rng.randint(1, 254)}",
            "session_id": f"s-{n // 3}",
            "grclid": f"gr-click-{n}" if attributed else None,
            "visitor_id": f"gr-visitor-{rng.randint(1, 10**6)}",
        },
        "custom_data": {
            "value": round(sum(i["item_price"] * i["quantity"] for i in items), 2),
            "currency": rng.choice(("EUR", "EUR", "USD", "GBP")),
            "contents": items,
        },
    }
    if name == "Purchase":
        event["custom_data"]["order_id"] = str(n)
    if name in ("ViewContent", "PageView"):
        event["page"] = {"type": "PRODUCT" if name == "ViewContent" else "HOMEPAGE", "language": "de_DE"}
    return event


def invalid(rng: random.Random, n: int) -> dict[str, Any]:
    """An event a careless caller sends; ``enqueue`` refuses it with field errors."""
    event = conversion(rng, n)
    flaw = n % 3
    if flaw == 0:
        event["custom_data"]["currency"] = "EURO"
    elif flaw == 1:
        del event["event_name"]
    else:
        event["user_data"]["em"] = ["not-an-address"]
    return event
