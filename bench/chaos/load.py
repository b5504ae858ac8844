"""The chaos producer: paced enqueues of events with stable ids, and what became of each call.

Every event is a one-item purchase whose ``event_id`` is also its ``order_id``, so each vendor
carries the id in its own payload (``event_id``, Tracify's ``data.order_id``, RECO's ``orderId``
name value) and copies can be counted at the vendor.  A call the relay refuses is counted as
``refused`` and, while Redis is unreachable, tried again the way a web app's job queue would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conversion_relay import EnqueueError, Relay

#: How long to keep retrying one call while Redis is unreachable before giving it up.
RETRY_FOR_SECONDS = 120.0
RETRY_PAUSE_SECONDS = 0.2


def chaos_event(event_id: str, n: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout/thank-you",
        "user_data": {
            "em": [f"chaos{n}@example.com"],
            "external_id": [str(100000 + n)],
            "client_ip_address": f"203.0.113.{n % 250 + 1}",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        },
        "custom_data": {
            "value": 10.0 + n % 90,
            "currency": "EUR",
            "order_id": event_id,
            "contents": [{"id": f"SKU-{n % 977}", "quantity": 1, "item_price": 10.0 + n % 90}],
        },
    }


def is_full_destination(exc: Exception) -> bool:
    """The producer's "this destination is full" refusal (a subclass of EnqueueError, or an
    ``OOM`` answer from a Redis at ``maxmemory``), as opposed to Redis being unreachable."""
    if type(exc) is not EnqueueError:
        return True
    text = str(exc)
    return any(word in text for word in ("OutOfMemory", "OOM", "out of memory", "ResponseError", "full"))


@dataclass
class Tally:
    accepted: dict[str, set[str]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    given_up: int = 0
    finished_at: float | None = None


class Producer(threading.Thread):
    """Enqueue ``total`` events at ``rate`` events/s in calls of ``per_call``.

    ``destinations``: each call goes to these destinations together (one fan-out call), or, with
    ``separately``, one call per destination so each can be refused on its own.
    """

    def __init__(
        self,
        relay: Relay,
        prefix: str,
        total: int,
        rate: float,
        per_call: int,
        destinations: Sequence[str],
        *,
        separately: bool = False,
        retry_unreachable: bool = True,
    ) -> None:
        super().__init__(name=f"chaos-producer-{prefix}", daemon=True)
        self.relay = relay
        self.prefix = prefix
        self.total = total
        self.rate = rate
        self.per_call = per_call
        self.destinations = list(destinations)
        self.separately = separately
        self.retry_unreachable = retry_unreachable
        self.tally = Tally(accepted={d: set() for d in self.destinations}, refused=dict.fromkeys(self.destinations, 0))
        self.sent = 0
        self.stop_event = threading.Event()

    @property
    def progress(self) -> float:
        return self.sent / self.total if self.total else 1.0

    def run(self) -> None:
        started = time.time()
        for start in range(0, self.total, self.per_call):
            if self.stop_event.is_set():
                break
            due = started + start / self.rate
            if due > time.time():
                time.sleep(due - time.time())
            n_range = range(start, min(start + self.per_call, self.total))
            events = [chaos_event(f"{self.prefix}-{n}", n) for n in n_range]
            groups = [[d] for d in self.destinations] if self.separately else [self.destinations]
            for targets in groups:
                self._call(events, targets)
            self.sent = n_range.stop
        self.tally.finished_at = time.time()

    def _call(self, events: list[dict[str, Any]], targets: list[str]) -> None:
        ids = [event["event_id"] for event in events]
        deadline = time.time() + RETRY_FOR_SECONDS
        while True:
            try:
                self.relay.enqueue(events, destinations=targets)
            except EnqueueError as exc:
                kind = type(exc).__name__
                self.tally.errors[kind] = self.tally.errors.get(kind, 0) + 1
                # A refusal for some destinations only (the others of the call stored the events).
                stored_in = [name for name in getattr(exc, "stored_in", ()) or () if name in targets]
                for name in stored_in:
                    self.tally.accepted[name].update(ids)
                targets = [name for name in targets if name not in stored_in]
                if is_full_destination(exc) or not self.retry_unreachable or time.time() > deadline:
                    for name in targets:
                        self.tally.refused[name] += len(events)
                    if not is_full_destination(exc) and self.retry_unreachable:
                        self.tally.given_up += len(events)
                    return
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            for name in targets:
                self.tally.accepted[name].update(ids)
            return
