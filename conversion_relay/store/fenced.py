"""Writes that only the owner of a partition may make, run as one atomic script.

A drain that has lost its lease (it stalled, or Redis was out of reach longer than the lease)
must not record outcomes: a new owner may have taken its events over by now.  So every outcome
is queued on a :class:`FencedWrite` -- which offers the few pipeline methods the engine uses --
and run by one Lua script that first checks the lease token: if it differs, nothing is written
and :class:`~conversion_relay.errors.LeaseLost` is raised.

The script works when Redis is full, too.  With ``maxmemory`` reached and ``noeviction``,
Redis refuses a script whose first write may grow memory but lets a script that has written
finish (a script is never stopped halfway).  The first write here is always ``HDEL`` of the
drain's in-flight marker, which cannot grow memory, so outcomes -- and the memory the
acknowledgements free -- are recorded even then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conversion_relay.errors import LeaseLost

if TYPE_CHECKING:
    import redis

# KEYS[1]: lease, KEYS[2]: in-flight markers, then every key the commands touch (declared for
# Redis Cluster).  ARGV[1]: token, ARGV[2]: consumer, then per command: its length, its words.
_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""

#: Ids per XACK/XDEL command: Lua's unpack has a limit of a few thousand values.
_IDS_PER_COMMAND = 1000


class FencedWrite:
    """Commands to run only while ``token`` owns the lease.  Build, then :meth:`execute`."""

    def __init__(self, script: Any, lease_key: str, inflight_key: str, token: str, consumer: str) -> None:
        self._script = script
        self._keys = [lease_key, inflight_key]
        self._seen = set(self._keys)
        self._args: list[Any] = [token, consumer]

    def _add(self, key: str, *words: Any) -> None:
        if key not in self._seen:
            self._seen.add(key)
            self._keys.append(key)
        self._args.append(len(words))
        self._args.extend(words)

    def hset(self, key: str, mapping: Mapping[str, Any]) -> None:
        flat = [w for pair in mapping.items() for w in pair]
        self._add(key, "HSET", key, *flat)

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self._add(key, "HINCRBY", key, field, amount)

    def hsetnx(self, key: str, field: str, value: Any) -> None:
        self._add(key, "HSETNX", key, field, value)

    def hdel(self, key: str, *fields: str) -> None:
        self._add(key, "HDEL", key, *fields)

    def zadd(self, key: str, mapping: Mapping[str, float]) -> None:
        flat = [w for member, score in mapping.items() for w in (score, member)]
        self._add(key, "ZADD", key, *flat)

    def zrem(self, key: str, *members: str) -> None:
        self._add(key, "ZREM", key, *members)

    def set(self, key: str, value: Any, px: int | None = None) -> None:
        self._add(key, "SET", key, value, *(("PX", px) if px else ()))

    def delete(self, *keys: str) -> None:
        for key in keys:
            self._add(key, "DEL", key)

    def xack(self, key: str, group: str, *ids: str) -> None:
        for start in range(0, len(ids), _IDS_PER_COMMAND):
            self._add(key, "XACK", key, group, *ids[start : start + _IDS_PER_COMMAND])

    def xdel(self, key: str, *ids: str) -> None:
        for start in range(0, len(ids), _IDS_PER_COMMAND):
            self._add(key, "XDEL", key, *ids[start : start + _IDS_PER_COMMAND])

    def execute(self) -> None:
        """Run every command, or none if the lease is no longer the caller's."""
        if not self._script(keys=self._keys, args=self._args):
            raise LeaseLost("the partition's lease passed to another drain; nothing was recorded")


def fenced_script(client: redis.Redis) -> Any:
    return client.register_script(_FENCED)
