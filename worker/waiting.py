"""Batches waiting in Redis for their next attempt.

A failed batch is parked here rather than on a broker countdown: a Celery countdown longer than
the Redis visibility timeout would be handed out twice, and a retry horizon of a day is far
longer than any sane visibility timeout.  The drains of a destination claim due batches
themselves; a claim lasts until the end of the request it is for (renewed by each request of the
batch), so a batch is in at most one request at a time.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from worker.errors import LeaseLost

if TYPE_CHECKING:
    import redis

    from worker.keys import Keys

# KEYS: lease, retry zset.  ARGV: token, highest due time to take (now, or +inf for a probe),
# now, claimed until, batch key prefix, lease ttl ms.  Takes the most overdue batch nobody has
# claimed and pushes its score and ``claimed_until`` past the coming request, atomically, so two
# drains never claim the same batch and a drain that dies leaves it due again.
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 20)) do
  local key = ARGV[5] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[2], id)
  elseif tonumber(redis.call('HGET', key, 'claimed_until') or '0') <= tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    redis.call('HSET', key, 'claimed_until', ARGV[4])
    return {1, id}
  end
end
return {0}
"""

# KEYS: retry zset.  ARGV: now, batch key prefix.  Every batch not claimed becomes due now.
_RESCHEDULE = """
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  if tonumber(redis.call('HGET', ARGV[2] .. id, 'claimed_until') or '0') <= tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    n = n + 1
  end
end
return n
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
        self._reschedule = client.register_script(_RESCHEDULE)

    def park(self, pipe: Any, batch: WaitingBatch) -> None:
        pipe.hset(self.keys.batch(batch.destination, batch.id), mapping=batch.to_redis())
        pipe.zadd(self.keys.retry(batch.destination), {batch.id: batch.next_attempt_at})

    def remove(self, pipe: Any, destination: str, batch_id: str) -> None:
        pipe.zrem(self.keys.retry(destination), batch_id)
        pipe.delete(self.keys.batch(destination, batch_id))

    def claim(
        self, destination: str, lease: tuple[str, str, int], now: float, window_seconds: float, *, probe: bool = False
    ) -> WaitingBatch | None:
        """The most overdue batch (with ``probe``, the soonest due, even if not due yet),
        claimed for ``window_seconds`` by the drain holding ``lease`` (key, token, ttl ms).

        Raises:
            LeaseLost: the lease is no longer the caller's.
        """
        lease_key, token, ttl_ms = lease
        prefix = self.keys.batch(destination, "")
        while True:
            reply = self._claim(
                keys=[lease_key, self.keys.retry(destination)],
                args=[token, "+inf" if probe else now, now, now + window_seconds, prefix, ttl_ms],
            )
            if int(reply[0]) < 0:
                raise LeaseLost("the partition's lease passed to another drain")
            if not int(reply[0]):
                return None
            raw = self.redis.hgetall(prefix + reply[1].decode())
            if raw:
                return WaitingBatch.from_redis(raw)

    def reschedule_all(self, destination: str, now: float) -> int:
        """Make every unclaimed batch due now: the destination answers again."""
        return int(self._reschedule(keys=[self.keys.retry(destination)], args=[now, self.keys.batch(destination, "")]))

    def count(self, destination: str) -> int:
        return int(self.redis.zcard(self.keys.retry(destination)))

    def list(self, destination: str, limit: int = 100) -> list[WaitingBatch]:
        """Waiting batches, soonest first (``attempts`` and ``next_attempt_at`` included)."""
        ids = self.redis.zrange(self.keys.retry(destination), 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.keys.batch(destination, batch_id.decode()))
        return [WaitingBatch.from_redis(raw) for raw in pipe.execute() if raw]
