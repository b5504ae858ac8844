"""Batches waiting in Redis for their next attempt.

A failed batch is parked here rather than on a broker countdown: a Celery countdown longer than
the Redis visibility timeout would be handed out twice, and a retry horizon of a day is far
longer than any sane visibility timeout.  The drain task claims due batches itself.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

    from worker.keys import Keys

# Claim the most overdue batch and push its score out by the lease, atomically, so that two
# drainers never claim the same batch and a drainer that dies leaves it due again.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ids[1])
return ids[1]
"""


@dataclass
class WaitingBatch:
    """A batch of vendor parts and its retry history."""

    destination: str
    group: str
    parts: list[str]
    attempts: int
    first_failure_at: float
    last_failure_at: float
    next_attempt_at: float
    last_status: int | None = None
    last_reason: str = ""
    last_excerpt: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_redis(self) -> dict[str, str]:
        data = asdict(self)
        data["parts"] = json.dumps(self.parts)
        data["last_status"] = "" if self.last_status is None else str(self.last_status)
        return {k: str(v) for k, v in data.items()}

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> WaitingBatch:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=data["id"],
            destination=data["destination"],
            group=data["group"],
            parts=json.loads(data["parts"]),
            attempts=int(data["attempts"]),
            first_failure_at=float(data["first_failure_at"]),
            last_failure_at=float(data["last_failure_at"]),
            next_attempt_at=float(data["next_attempt_at"]),
            last_status=int(data["last_status"]) if data.get("last_status") else None,
            last_reason=data.get("last_reason", ""),
            last_excerpt=data.get("last_excerpt", ""),
        )

    def summary(self) -> dict[str, Any]:
        """What ``status`` shows: everything but the parts themselves."""
        data = asdict(self)
        data["events"] = len(data.pop("parts"))
        return data


class WaitingBatches:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._claim = client.register_script(_CLAIM)

    def park(self, pipe: redis.client.Pipeline, batch: WaitingBatch) -> None:
        pipe.hset(self.keys.batch(batch.destination, batch.id), mapping=batch.to_redis())
        pipe.zadd(self.keys.retry(batch.destination), {batch.id: batch.next_attempt_at})

    def remove(self, pipe: redis.client.Pipeline, destination: str, batch_id: str) -> None:
        pipe.zrem(self.keys.retry(destination), batch_id)
        pipe.delete(self.keys.batch(destination, batch_id))

    def claim_due(self, destination: str, now: float, lease_seconds: float) -> WaitingBatch | None:
        """The most overdue batch, leased to the caller for ``lease_seconds``."""
        while True:
            batch_id = self._claim(keys=[self.keys.retry(destination)], args=[now, now + lease_seconds])
            if not batch_id:
                return None
            raw = self.redis.hgetall(self.keys.batch(destination, batch_id.decode()))
            if raw:
                return WaitingBatch.from_redis(raw)
            self.redis.zrem(self.keys.retry(destination), batch_id)

    def count(self, destination: str) -> int:
        return int(self.redis.zcard(self.keys.retry(destination)))

    def list(self, destination: str, limit: int = 100) -> list[WaitingBatch]:
        """Waiting batches, soonest first (``attempts`` and ``next_attempt_at`` included)."""
        ids = self.redis.zrange(self.keys.retry(destination), 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.keys.batch(destination, batch_id.decode()))
        return [WaitingBatch.from_redis(raw) for raw in pipe.execute() if raw]
