"""The backlog's entries: what a stream entry holds, and the one script producers append with.

A stream entry has one field: ``c``, a canonical event as JSON, or ``n``, a vendor-native item
(``{"o": operation, "p": payload}``).  Producers (sync and asyncio alike) write entries only
through :data:`APPEND_SCRIPT`; drains, erasure and replay read them only through :func:`read`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from conversion_relay.store import stats
from conversion_relay.store.keys import Keys

#: The field of a canonical event's entry.
CANONICAL = b"c"
#: The field of a vendor-native item's entry.
NATIVE = b"n"


# One command, so one round trip, and all-or-nothing per destination.
# KEYS: the memory reading, then per destination its stats key, its call key and its partition
# streams.
# ARGV: entry field (c or n), destination count, dedup ms (0: none), memory high-water share,
#       memory reading ms, (partitions, cap) per destination, then (partition hash, payload)
#       per event.
# Redis's own memory is read first: the call is refused whole if storing it would pass the
# high-water mark, so outcomes, leases and broker messages always have room.  INFO costs some
# 20 us, so its reading is kept for MEMORY_READING_MS and shared by every producer.
# A destination whose call key exists already holds this call and is left alone: a retry of a
# call that timed out, or that a full destination refused, stores only where it is missing.
# The backlog a cap counts is the streams plus the events in waiting batches.
# Counter names come from conversion_relay.store.stats ($accepted, $waiting).
# Returns {-1, used, maxmemory} above the high-water mark, else {destinations stored now,
# destinations that held the call already, then (index, backlog) of each refused destination}.
APPEND_SCRIPT = stats.lua("""
local ndest = tonumber(ARGV[2])
local first = 6 + 2 * ndest
local nevents = (#ARGV - first + 1) / 2
local used, limit
local reading = redis.call('GET', KEYS[1])
if reading then
  used, limit = string.match(reading, '(%d+) (%d+)')
  used, limit = tonumber(used), tonumber(limit)
else
  local info = redis.call('INFO', 'memory')
  used = tonumber(string.match(info, 'used_memory:(%d+)'))
  limit = tonumber(string.match(info, 'maxmemory:(%d+)')) or 0
end
if limit > 0 then
  local size = 0
  for i = first + 1, #ARGV, 2 do size = size + #ARGV[i] end
  if used + size * ndest * 2 > limit * tonumber(ARGV[4]) then return {-1, used, limit} end
end
if not reading then
  redis.call('SET', KEYS[1], string.format('%d %d', used, limit), 'PX', ARGV[5])
end
local dedup_ms = tonumber(ARGV[3])
local open, refused = {}, {}
local held = 0
local key = 2
for d = 1, ndest do
  local parts, cap = tonumber(ARGV[4 + 2 * d]), tonumber(ARGV[5 + 2 * d])
  local backlog = 0
  if cap > 0 then
    backlog = math.max(0, tonumber(redis.call('HGET', KEYS[key], $waiting) or '0'))
    for k = 1, parts do backlog = backlog + redis.call('XLEN', KEYS[key + 1 + k]) end
  end
  if cap > 0 and backlog + nevents > cap then
    refused[#refused + 1] = {d, backlog}
  elseif dedup_ms > 0 and not redis.call('SET', KEYS[key + 1], '1', 'NX', 'PX', dedup_ms) then
    held = held + 1
  else
    open[#open + 1] = {key, parts}
  end
  key = key + 2 + parts
end
for _, dest in ipairs(open) do
  local stats, parts = dest[1], dest[2]
  for i = first, #ARGV, 2 do
    redis.call('XADD', KEYS[stats + 2 + tonumber(ARGV[i]) % parts], '*', ARGV[1], ARGV[i + 1])
  end
  redis.call('HINCRBY', KEYS[stats], $accepted, nevents)
end
local out = {#open, held}
for _, r in ipairs(refused) do out[#out + 1] = r[1]; out[#out + 1] = r[2] end
return out
""")


#: How long one reading of Redis's memory serves every producer (at 100 MB/s of events, 2 MB).
MEMORY_READING_MS = 20


@dataclass(frozen=True)
class StoredEntry:
    """A stream entry's content: which kind it is, and its bytes as stored."""

    field: bytes
    raw: bytes

    @property
    def is_canonical(self) -> bool:
        return self.field == CANONICAL

    def canonical_event(self) -> dict[str, Any]:
        return orjson.loads(self.raw)

    def native_item(self) -> tuple[str | None, Any]:
        """``(operation, payload)`` of a vendor-native item."""
        native = orjson.loads(self.raw)
        return native.get("o"), native["p"]


def read(fields: Mapping[bytes, bytes]) -> StoredEntry:
    """What a stream entry holds (an entry without either field reads as an empty native one)."""
    if CANONICAL in fields:
        return StoredEntry(CANONICAL, fields[CANONICAL])
    return StoredEntry(NATIVE, fields.get(NATIVE, b""))


def native_body(operation: str | None, item: Any) -> bytes:
    """The stored bytes of one vendor-native item."""
    return orjson.dumps({"o": operation, "p": item})


@dataclass(frozen=True)
class Target:
    """One destination an append writes to: its partitions and its backlog cap (0: none)."""

    name: str
    partitions: int
    cap: int


@dataclass(frozen=True)
class AppendResult:
    """What the script did: refused the whole call for memory (``memory = (used, maxmemory)``),
    or stored it in ``stored`` destinations, found it already held in ``held``, and refused it
    in the ``full`` ones (``{name: backlog}``)."""

    memory: tuple[int, int] | None = None
    stored: int = 0
    held: int = 0
    full: dict[str, int] = field(default_factory=dict)


def append_command(
    keys: Keys,
    targets: Sequence[Target],
    kind: bytes,
    bodies: Sequence[bytes],
    hashes: Sequence[int] | None,
    *,
    digest: str | None,
    dedup_ms: int,
    high_water: float,
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of :data:`APPEND_SCRIPT` for one call."""
    script_keys: list[str] = [keys.memory]
    args: list[Any] = [kind, len(targets), dedup_ms if digest else 0, high_water, MEMORY_READING_MS]
    for target in targets:
        call = keys.call(f"{digest}:{target.name}") if digest else keys.stats(target.name)
        script_keys += [keys.stats(target.name), call, *keys.streams(target.name, target.partitions)]
        args += [target.partitions, target.cap]
    for index, body in enumerate(bodies):
        args += (hashes[index] if hashes else 0, body)
    return script_keys, args


def append_result(reply: Sequence[Any], targets: Sequence[Target]) -> AppendResult:
    stored = int(reply[0])
    if stored == -1:
        return AppendResult(memory=(int(reply[1]), int(reply[2])))
    full = {targets[int(reply[i]) - 1].name: int(reply[i + 1]) for i in range(2, len(reply), 2)}
    return AppendResult(stored=stored, held=int(reply[1]), full=full)
