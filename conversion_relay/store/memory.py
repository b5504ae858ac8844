"""Keeping Redis from losing or refusing events: the eviction policy and the memory watermark.

The backlog lives in Redis, so two things must never happen there.  An eviction policy other
than ``noeviction`` deletes keys -- stored events -- when memory runs short: a worker refuses to
start against such a server unless ``relay.allow_evicting_redis`` says the loss is accepted.
And a Redis that fills up refuses every write, outcomes and broker messages included: the
producer's script reads Redis's memory before it stores anything and refuses a call that would
pass ``relay.memory_high_water`` of ``maxmemory``, so room stays for everything that moves
events out, and enqueue accepts again once delivery has freed memory, without an operator.
This module checks the policy and tells the operators, once a minute, while the mark is passed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from conversion_relay.errors import ConfigurationError

if TYPE_CHECKING:
    import redis

    from conversion_relay.config.settings import Settings

log = logging.getLogger("conversion_relay.memory")

#: How often the scheduler reads ``INFO memory``.
WATCH_SECONDS = 5.0
#: Repeat an error this often while it lasts.
REPEAT_SECONDS = 60.0


class MemoryGuard:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.high_water = settings.memory_high_water
        self.allow_evicting = settings.allow_evicting_redis
        self._next_watch = 0.0
        self._next_policy_log = 0.0
        self._next_memory_log = 0.0

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
        """Tell the operators when the policy turned evicting, or enqueue refuses events."""
        now = time.time() if now is None else now
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_SECONDS
        info = self.redis.info("memory")
        problem = self._policy_problem(info)
        if problem and not self.allow_evicting and now >= self._next_policy_log:
            log.error(problem)
            self._next_policy_log = now + REPEAT_SECONDS
        limit = int(info.get("maxmemory") or 0)
        share = int(info.get("used_memory") or 0) / limit if limit else 0.0
        if share >= self.high_water and now >= self._next_memory_log:
            log.error(
                "Redis memory at %.0f%% of maxmemory, above the high-water mark (%.0f%%): enqueue refuses new "
                "events until delivery frees memory",
                share * 100,
                self.high_water * 100,
            )
            self._next_memory_log = now + REPEAT_SECONDS
