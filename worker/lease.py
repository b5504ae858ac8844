"""Which drain task owns a destination.

A destination has ``parallel_drains`` slots (one by default, so its requests leave in order and
full); a drain task works it only while it holds a slot's lease.  A lease is a Redis key with a
token and an expiry: the drain renews it as it goes, and if its worker dies the lease runs out
and the scheduler starts another.  Two owners at once (a lease
that ran out under a slow task) cost only some parallelism: the consumer group still hands each
event to one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from worker.keys import Keys

# Renew the lease if the caller owns it (or nobody does) and report any back-off in force.
_HEARTBEAT = """
local owner = redis.call('GET', KEYS[1])
local owned = 0
if owner == ARGV[1] or not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  owned = 1
end
return {owned, redis.call('GET', KEYS[2])}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._release = client.register_script(_RELEASE)

    def acquire(self, destination: str, slot: int, token: str, ttl_seconds: float) -> bool:
        key = self.keys.lease(destination, slot)
        return bool(self.redis.set(key, token, nx=True, px=int(ttl_seconds * 1000)))

    def heartbeat(self, destination: str, slot: int, token: str, ttl_seconds: float) -> tuple[bool, float | None]:
        """Renew the lease; return whether the caller owns it and until when to back off."""
        owned, paused = self._heartbeat(
            keys=[self.keys.lease(destination, slot), self.keys.pause(destination)],
            args=[token, int(ttl_seconds * 1000)],
        )
        return bool(owned), float(paused) if paused else None

    def release(self, destination: str, slot: int, token: str) -> None:
        self._release(keys=[self.keys.lease(destination, slot)], args=[token])
