"""Keeping Redis from losing or refusing events: the eviction policy and the memory watermark.

The backlog lives in Redis, so two things must never happen there.  An eviction policy other
than ``noeviction`` deletes keys -- stored events -- when memory runs short: a worker refuses to
start against such a server unless ``relay.allow_evicting_redis`` says the loss is accepted.
And a Redis that fills up refuses every write, outcomes and broker messages included: above
``relay.memory_high_water`` of ``maxmemory`` the scheduler raises a flag (``<p>:memory``) that
makes ``enqueue`` refuse new events, so room stays for everything that moves events out; the
flag drops once delivery has freed memory, without an operator.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from worker.errors import ConfigurationError

if TYPE_CHECKING:
    import redis

    from worker.keys import Keys
    from worker.settings import Settings

log = logging.getLogger("conversion_relay.memory")

#: How often the scheduler reads ``INFO memory``.
WATCH_SECONDS = 1.0
#: The flag drops again this far below the high-water mark (no flapping at the edge).
HYSTERESIS = 0.05
#: The flag outlives a scheduler that stops watching by this long, then Redis's own limit acts.
FLAG_SECONDS = 5.0
#: Repeat the eviction-policy error this often while it lasts.
POLICY_LOG_SECONDS = 60.0

_SET_FLAG = """
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class MemoryGuard:
    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.redis = client
        self.keys = keys
        self.high_water = settings.memory_high_water
        self.allow_evicting = settings.allow_evicting_redis
        self.refusing = False
        self._set_flag = client.register_script(_SET_FLAG)
        self._next_watch = 0.0
        self._next_policy_log = 0.0

    def check_policy(self) -> None:
        """Refuse a Redis that may evict stored events.

        Raises:
            ConfigurationError: naming the policy and what to do.
        """
        problem = self._policy_problem(self.redis.info("memory"))
        if problem and not self.allow_evicting:
            raise ConfigurationError(problem)

    def _policy_problem(self, info: dict) -> str | None:
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy == "noeviction":
            return None
        kw = self.redis.connection_pool.connection_kwargs
        return (
            f"Redis at {kw.get('host')}:{kw.get('port')} has maxmemory-policy {policy}, which deletes "
            "keys -- stored events -- when memory runs short. Set maxmemory-policy noeviction "
            "(redis.conf, or CONFIG SET maxmemory-policy noeviction), or set "
            "relay.allow_evicting_redis = true to accept losing events."
        )

    def watch(self, now: float | None = None) -> None:
        """Raise or drop the flag that makes ``enqueue`` refuse events (once per second)."""
        now = time.time() if now is None else now
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_SECONDS
        info = self.redis.info("memory")
        problem = self._policy_problem(info)
        if problem and not self.allow_evicting and now >= self._next_policy_log:
            log.error(problem)
            self._next_policy_log = now + POLICY_LOG_SECONDS
        limit = int(info.get("maxmemory") or 0)
        used = int(info.get("used_memory") or 0)
        share = used / limit if limit else 0.0
        if share >= self.high_water or (self.refusing and share >= self.high_water - HYSTERESIS):
            if not self.refusing:
                log.error(
                    "Redis memory at %.0f%% of maxmemory (high-water mark %.0f%%): enqueue refuses new events "
                    "until delivery frees memory",
                    share * 100,
                    self.high_water * 100,
                )
            self.refusing = True
            self._set_flag(keys=[self.keys.memory], args=[f"{share:.3f}", int(FLAG_SECONDS * 1000)])
        elif self.refusing:
            self.refusing = False
            self.redis.delete(self.keys.memory)
            log.warning("Redis memory at %.0f%% of maxmemory: enqueue accepts events again", share * 100)
