"""A partition of a destination's stream, read through one consumer group.

The producer appends; the drain task that owns the partition reads with ``XREADGROUP`` under a
consumer name of its own, which records every entry handed out in that consumer's pending list
until it is acknowledged.  An entry is acknowledged and deleted in the same transaction that
records its outcome, so the stream only ever holds unresolved events.

When ownership passes to a new drain (the previous one ended, died or lost its lease), the new
owner takes over the previous consumers' pending entries with :meth:`PartitionStream.take_over`
-- but only once nothing of theirs can still be in flight: each drain marks, before every
request, until when that request may last (``<p>:inflight:<d>:<k>``).  The take-over and the
removal of an emptied consumer happen in one script, so no entry is ever left in a consumer
that nobody will read again.  A take-over is bounded by bytes as well as by count: the script
looks at each entry's size before it claims it and stops at the caller's byte budget (after one
entry at least), so the drain never holds more than it can afford; the rest stays with the earlier
consumer and is taken over on a later look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from conversion_relay.store import stats
from conversion_relay.store.keys import GROUP

if TYPE_CHECKING:
    from conversion_relay.store.keys import Keys

#: Most pending entries taken over in one script call.
TAKE_OVER_BATCH = 1000

# KEYS: lease, in-flight markers, stream, stats.  ARGV: token, this consumer, group, most entries,
# most bytes of field values (0: no limit; the first entry is taken whatever its size).
# Returns {-1} if the caller does not own the lease, else {consumers still in flight (or holding
# what the byte budget left), then id, fields, times delivered for each entry taken over}.
_TAKE_OVER = stats.lua("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[3], ARGV[3])
if not ok then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local room = tonumber(ARGV[4])
local budget = tonumber(ARGV[5] or '0')
local taken_bytes = 0
local out = {0}
local busy = 0
for _, c in ipairs(consumers) do
  local name, pending
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
  end
  if name ~= ARGV[2] then
    if tonumber(redis.call('HGET', KEYS[2], name) or '0') > now then
      busy = busy + 1
    else
      if pending > 0 and room > 0 then
        local held = redis.call('XPENDING', KEYS[3], ARGV[3], '-', '+', room, name)
        local ids, times = {}, {}
        for _, p in ipairs(held) do
          if budget > 0 then
            local size = 0
            for _, e in ipairs(redis.call('XRANGE', KEYS[3], p[1], p[1])) do
              for i = 2, #e[2], 2 do size = size + #e[2][i] end
            end
            if taken_bytes > 0 and taken_bytes + size > budget then room = 0; break end
            taken_bytes = taken_bytes + size
          end
          ids[#ids + 1] = p[1]; times[p[1]] = p[4]
        end
        if #ids > 0 then
          for _, e in ipairs(redis.call('XCLAIM', KEYS[3], ARGV[3], ARGV[2], 0, unpack(ids))) do
            out[#out + 1] = e[1]; out[#out + 1] = e[2]; out[#out + 1] = times[e[1]] + 1
          end
        end
        if room > 0 then room = room - #ids end
        pending = pending - #ids
      end
      if pending <= 0 then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[3], ARGV[3], name)
        redis.call('HDEL', KEYS[2], name)
      else
        busy = busy + 1
      end
    end
  end
end
out[1] = busy
if #out > 1 then redis.call('HINCRBY', KEYS[4], $reclaimed, string.format('%d', (#out - 1) / 3)) end
return out
""")


@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1

    @property
    def size(self) -> int:
        """Bytes of its field values (the names are a byte each): what holding it costs, before
        any decoding."""
        return sum(map(len, self.fields.values()))

    @property
    def enqueued_at(self) -> float:
        """Enqueue time in seconds, from the entry id (milliseconds since the epoch)."""
        return int(self.id.split("-", 1)[0]) / 1000.0


class PartitionStream:
    """One partition: its stream key, its in-flight markers and its lease key."""

    def __init__(self, client: redis.Redis, keys: Keys, destination: str, partition: int = 0) -> None:
        self.redis = client
        self.destination = destination
        self.partition = partition
        self.key = keys.stream(destination, partition)
        self.inflight_key = keys.inflight(destination, partition)
        self.lease_key = keys.lease(destination, partition)
        self.stats_key = keys.stats(destination)
        self._take_over = client.register_script(_TAKE_OVER)

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
            self.ensure_group()  # from the start of the stream: nothing stored is skipped
            reply = self.redis.xreadgroup(GROUP, consumer, {self.key: ">"}, count=count)
        if not reply:
            return []
        return [Entry(id.decode(), fields) for id, fields in reply[0][1] if fields]

    def take_over(
        self, token: str, consumer: str, count: int = TAKE_OVER_BATCH, max_bytes: int = 0
    ) -> tuple[list[Entry], int] | None:
        """Entries earlier drains of this partition read and left unresolved.

        At most ``count`` entries, and -- unless ``max_bytes`` is 0 -- at most ``max_bytes`` of
        them (:attr:`Entry.size`), but always the first one.

        Returns:
            The entries now held by ``consumer``, and how many earlier consumers may still have
            a request in flight or hold entries the byte budget left (their entries are taken
            over later); ``None`` if ``token`` no longer owns the partition.
        """
        reply = self._take_over(
            keys=[self.lease_key, self.inflight_key, self.key, self.stats_key],
            args=[token, consumer, GROUP, count, max_bytes],
        )
        if int(reply[0]) < 0:
            return None
        entries = []
        for i in range(1, len(reply), 3):
            flat = reply[i + 1]
            fields = {flat[j]: flat[j + 1] for j in range(0, len(flat), 2)}
            entries.append(Entry(reply[i].decode(), fields, int(reply[i + 2])))
        return entries, int(reply[0])

    def ack(self, pipe: object, ids: list[str]) -> None:
        """Queue the acknowledgement and deletion of resolved entries on ``pipe``."""
        if ids:
            pipe.xack(self.key, GROUP, *ids)  # type: ignore[attr-defined]
            pipe.xdel(self.key, *ids)  # type: ignore[attr-defined]

    def backlog(self) -> dict[str, int]:
        """``unread`` entries and ``pending`` ones (handed out, not yet resolved)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.key)
        pipe.xpending(self.key, GROUP)
        length, pending = pipe.execute(raise_on_error=False)
        held = pending["pending"] if isinstance(pending, dict) else 0
        total = length if isinstance(length, int) else 0
        return {"unread": max(0, total - held), "pending": held}


def destination_backlog(client: redis.Redis, keys: Keys, destination: str, partitions: int) -> dict[str, int]:
    """``unread`` and ``pending`` summed over a destination's partitions."""
    total = {"unread": 0, "pending": 0}
    for k in range(partitions):
        for name, value in PartitionStream(client, keys, destination, k).backlog().items():
            total[name] += value
    return total
