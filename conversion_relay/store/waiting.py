"""Batches waiting in Redis for their next attempt.

A failed batch is parked here rather than on a broker countdown: a Celery countdown longer than
the Redis visibility timeout would be handed out twice, and a retry horizon of a day is far
longer than any sane visibility timeout.  The drains of a destination claim due batches
themselves; a claim lasts until the end of the request it is for (renewed by each request of the
batch), so a batch is in at most one request at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from conversion_relay.errors import LeaseLost
from conversion_relay.store import records, stats
from conversion_relay.store.records import (
    INTEGER,
    MASKED_TEXT,
    NUMBER,
    OPTIONAL_INTEGER,
    TEXT,
    TEXT_LIST,
    HashFormat,
    stored,
)

if TYPE_CHECKING:
    import redis

    from conversion_relay.store.keys import Keys

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
  elseif tonumber(redis.call('HGET', key, $claimed_until) or '0') <= tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    redis.call('HSET', key, $claimed_until, ARGV[4])
    return {1, id}
  end
end
return {0}
"""

# KEYS: retry zset.  ARGV: now, batch key prefix.  Every batch not claimed becomes due now.
_RESCHEDULE = """
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  if tonumber(redis.call('HGET', ARGV[2] .. id, $claimed_until) or '0') <= tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    n = n + 1
  end
end
return n
"""


@dataclass
class WaitingBatch:
    """A batch of vendor parts and its retry history: the hash ``<p>:batch:<d>:<id>``, plus the
    ``claimed_until`` the scripts here keep in it."""

    destination: str = stored(TEXT)
    group: str = stored(TEXT)
    parts: list[str] = stored(TEXT_LIST)
    attempts: int = stored(INTEGER)
    first_failure_at: float = stored(NUMBER)
    last_failure_at: float = stored(NUMBER)
    next_attempt_at: float = stored(NUMBER)
    last_status: int | None = stored(OPTIONAL_INTEGER, absent="", default=None)
    last_reason: str = stored(TEXT, absent="", default="")
    #: The vendor's words, masked on the way to Redis.
    last_excerpt: str = stored(MASKED_TEXT, absent="", default="")
    id: str = stored(TEXT, default_factory=lambda: uuid.uuid4().hex)

    def to_redis(self) -> dict[str, str]:
        return FORMAT.to_hash(self)

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes]) -> WaitingBatch:
        return FORMAT.from_hash(raw)

    def summary(self) -> dict[str, Any]:
        """What ``status`` shows: everything but the parts themselves."""
        data = asdict(self)
        data["events"] = len(data.pop("parts"))
        return data


#: The one reader and writer of a waiting batch's hash.
FORMAT = HashFormat(WaitingBatch)
#: Until when (epoch s) a drain holds the batch for a request: kept by the scripts alone.
CLAIMED_UNTIL = "claimed_until"

# KEYS: batch, retry zset, stats, then every partition lease of the destination.
# ARGV: batch id, parts as read, parts to keep ('' for none), parts removed, now.
# Returns {1 done | 0 gone | -1 changed since read, leases deleted}.  Erasure's: a claimed
# batch is in a drain's hands, so its leases go, fencing the drain (see conversion_relay.ops.erase).
_CUT = """
local parts = redis.call('HGET', KEYS[1], $parts)
if not parts then return {0, 0} end
if parts ~= ARGV[2] then return {-1, 0} end
local claimed = tonumber(redis.call('HGET', KEYS[1], $claimed_until) or '0') > tonumber(ARGV[5])
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HDEL', KEYS[1], $parts)
  redis.call('HSET', KEYS[1], $parts, ARGV[3])
end
redis.call('HINCRBY', KEYS[3], $waiting, 0 - tonumber(ARGV[4]))
local stopped = 0
if claimed then
  for i = 4, #KEYS do stopped = stopped + redis.call('DEL', KEYS[i]) end
end
return {1, stopped}
"""

_NAMES = (FORMAT.names, stats.FIELDS, (CLAIMED_UNTIL,))
CLAIM_SCRIPT = records.lua(_CLAIM, *_NAMES)
RESCHEDULE_SCRIPT = records.lua(_RESCHEDULE, *_NAMES)
CUT_SCRIPT = records.lua(_CUT, *_NAMES)


def lua_park(batch_key: str, retry_key: str, stats_key: str, values: Mapping[str, str], events: str) -> str:
    """Lua that parks a whole waiting batch, as :meth:`WaitingBatches.park` and :func:`stats.waiting`
    do: its hash (``values``: the Lua expression of every field's text), its place in the retry
    zset, and ``events`` more events in the ``waiting`` gauge.  For a script that makes a batch
    of something else (a replayed dead letter)."""
    hset = FORMAT.lua_hset(batch_key, values)
    return stats.lua(
        f"redis.call('HINCRBY', {stats_key}, $waiting, {events})\n"
        f"{hset}\n"
        f"redis.call('ZADD', {retry_key}, {values['next_attempt_at']}, {values['id']})\n"
    )


class WaitingBatches:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._reschedule = client.register_script(RESCHEDULE_SCRIPT)
        self._cut = client.register_script(CUT_SCRIPT)

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

    def parts_of(self, destination: str, batch_id: str) -> tuple[bytes, list[str], str] | None:
        """A batch's parts as stored (the text :meth:`cut` checks is unchanged), decoded, and
        its group; ``None`` if the batch is gone."""
        key = self.keys.batch(destination, batch_id)
        raw, group = self.redis.hmget(key, FORMAT.field("parts"), FORMAT.field("group"))
        if raw is None:
            return None
        return raw, FORMAT.decode("parts", raw), FORMAT.decode("group", group or b"")

    def cut(
        self, destination: str, batch_id: str, read: bytes, keep: Sequence[str], now: float, leases: Sequence[str]
    ) -> tuple[int, int]:
        """Keep only ``keep`` of a batch whose parts are still ``read`` (delete it if none are
        kept), moving the ``waiting`` gauge; if a drain has it claimed at ``now``, delete
        ``leases`` too.  One script, every write after a deletion: works when Redis is full.

        Returns:
            ``(1 done | 0 gone | -1 changed since read, leases deleted)``.
        """
        removed = len(FORMAT.decode("parts", read)) - len(keep)
        done, stopped = self._cut(
            keys=[self.keys.batch(destination, batch_id), self.keys.retry(destination), self.keys.stats(destination)]
            + list(leases),
            args=[batch_id, read, FORMAT.encode("parts", list(keep)) if keep else "", removed, now],
        )
        return int(done), int(stopped)

    def list(self, destination: str, limit: int = 100) -> list[WaitingBatch]:
        """Waiting batches, soonest first (``attempts`` and ``next_attempt_at`` included)."""
        ids = self.redis.zrange(self.keys.retry(destination), 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.keys.batch(destination, batch_id.decode()))
        return [WaitingBatch.from_redis(raw) for raw in pipe.execute() if raw]
