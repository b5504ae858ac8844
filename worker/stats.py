"""Per-destination counters in Redis: what was accepted, delivered, retried, dead-lettered."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from worker.keys import Keys

#: Every counter, in the order reports show them.
COUNTERS = (
    "accepted",
    "delivered",
    "duplicate",
    "test_ok",
    "skipped",
    "retried",
    "deferred",
    "dead_lettered",
    "requests",
    "split",
    "reclaimed",
)


def count(pipe: redis.client.Pipeline, keys: Keys, destination: str, **amounts: int) -> None:
    """Add to counters inside the caller's transaction, so counts move with the data."""
    key = keys.stats(destination)
    for name, amount in amounts.items():
        if amount:
            pipe.hincrby(key, name, amount)


def waiting(pipe: redis.client.Pipeline, keys: Keys, destination: str, amount: int) -> None:
    """Move the count of events held in waiting batches (part of the backlog a cap counts)."""
    if amount:
        pipe.hincrby(keys.stats(destination), "waiting", amount)


def waiting_events(client: redis.Redis, keys: Keys, destination: str) -> int:
    return max(0, int(client.hget(keys.stats(destination), "waiting") or 0))


def read(client: redis.Redis, keys: Keys, destination: str) -> dict[str, int]:
    raw = client.hgetall(keys.stats(destination))
    values = {k.decode(): int(v) for k, v in raw.items()}
    return {name: values.get(name, 0) for name in COUNTERS}
