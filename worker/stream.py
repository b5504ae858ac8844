"""A destination's stream of accepted events, read through one consumer group.

The producer appends; drain tasks read with ``XREADGROUP``, which records every entry handed out
in the group's pending list until it is acknowledged.  An entry is acknowledged and deleted in
the same transaction that records its outcome, so the stream only ever holds unresolved events,
and events held by a worker that died are taken over with ``XAUTOCLAIM`` once idle long enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from worker.keys import GROUP

if TYPE_CHECKING:
    from worker.keys import Keys


@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1

    @property
    def enqueued_at(self) -> float:
        """Enqueue time in seconds, from the entry id (milliseconds since the epoch)."""
        return int(self.id.split("-", 1)[0]) / 1000.0


class EventStream:
    def __init__(self, client: redis.Redis, keys: Keys, destination: str) -> None:
        self.redis = client
        self.key = keys.stream(destination)

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_seconds: float = 0.0) -> list[Entry]:
        """New entries for ``consumer``, waiting up to ``block_seconds`` for the first."""
        block_ms = int(block_seconds * 1000)
        try:
            reply = self.redis.xreadgroup(GROUP, consumer, {self.key: ">"}, count=count, block=block_ms or None)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        if not reply:
            return []
        return [Entry(id.decode(), fields) for id, fields in reply[0][1] if fields]

    def reclaim(self, consumer: str, min_idle_seconds: float, count: int) -> list[Entry]:
        """Entries another consumer read and left unacknowledged for ``min_idle_seconds``."""
        try:
            reply = self.redis.xautoclaim(self.key, GROUP, consumer, int(min_idle_seconds * 1000), "0-0", count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        claimed = [(id.decode(), fields) for id, fields in reply[1] if fields]
        if not claimed:
            return []
        pending = self.redis.xpending_range(self.key, GROUP, claimed[0][0], claimed[-1][0], len(claimed) * 2, consumer)
        deliveries = {p["message_id"].decode(): p["times_delivered"] for p in pending}
        return [Entry(id, fields, deliveries.get(id, 1)) for id, fields in claimed]

    def ack(self, pipe: redis.client.Pipeline, ids: list[str]) -> None:
        if ids:
            pipe.xack(self.key, GROUP, *ids)
            pipe.xdel(self.key, *ids)

    def backlog(self) -> dict[str, int]:
        """``unread`` entries and ``pending`` ones (handed out, not yet resolved)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.key)
        pipe.xpending(self.key, GROUP)
        length, pending = pipe.execute(raise_on_error=False)
        held = pending["pending"] if isinstance(pending, dict) else 0
        total = length if isinstance(length, int) else 0
        return {"unread": max(0, total - held), "pending": held}
