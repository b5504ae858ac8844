"""Starting drain tasks where there is work, from inside every worker.

Each worker runs a small thread that, every ``tick_seconds``, looks at every partition of every
destination: events not yet read, events an earlier drain left unresolved, and waiting batches
that are due (a drain for each, up to one per partition) -- or, while the destination is down,
waiting at all (the probe, on partition 0).
Where there is work, no owner and no back-off, it takes the partition's lease and sends a
``relay.drain`` task to the destination's queue.  A ``SET NX`` on a tick key lets only one
worker look per tick, however many run.

The producer therefore never talks to Celery: ``enqueue`` is a single Redis command, and
nothing rides on broker countdowns.  The same thread keeps watch over Redis itself
(:mod:`conversion_relay.store.memory`): the eviction policy, and the memory high-water mark above which
``enqueue`` refuses new events.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from kombu.exceptions import OperationalError

from conversion_relay.engine.breaker import OPEN_AFTER
from conversion_relay.engine.notices import Notifier
from conversion_relay.errors import ConfigurationError
from conversion_relay.store.connection import connect
from conversion_relay.store.deadletter import DeadLetterStore
from conversion_relay.store.keys import GROUP, Keys
from conversion_relay.store.lease import Leases
from conversion_relay.store.memory import MemoryGuard
from conversion_relay.store.stream import PartitionStream
from conversion_relay.store.workers import beat, worker_name
from conversion_relay.vendors.destination import MAX_PARTITIONS

if TYPE_CHECKING:
    from conversion_relay.config.settings import Settings

log = logging.getLogger("conversion_relay.scheduler")

#: How often the housekeeping runs (dead-letter retention, partitions left by a config change).
HOUSEKEEPING_SECONDS = 60.0
#: A worker's heartbeat lasts this many ticks (and at least :data:`HEARTBEAT_MIN_SECONDS`).
HEARTBEAT_TICKS = 5
HEARTBEAT_MIN_SECONDS = 5.0
#: How often dead-letter counts left at the end of a notice interval are sent.
NOTICE_FLUSH_SECONDS = 5.0
#: While Redis is out of reach, say so once per this long rather than on every tick.
UNREACHABLE_LOG_SECONDS = 30.0

# Only one worker schedules per tick.  DEL first: a write that never grows memory lets the
# script finish when Redis is full (see conversion_relay.store.fenced).
_TICK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"""


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        start_drain: Callable[[str, str, int], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.start_drain = start_drain
        self.clock = clock
        self.keys = Keys(settings.key_prefix)
        self.redis = connect(settings.redis_url)
        self.leases = Leases(self.redis, self.keys)
        self.memory = MemoryGuard(self.redis, settings)
        self.notices = Notifier(settings, self.redis, self.keys)
        #: Partitions each destination is drained in: its own, and any beyond them that still
        #: hold events (``parallel_drains`` was lowered).
        self.partitions = {d.name: list(range(d.partitions)) for d in settings.enabled_destinations}
        self._tick = self.redis.register_script(_TICK)
        self._next_housekeeping = 0.0
        self._next_notice_flush = 0.0
        self._quiet_until = 0.0
        self._prepared = False
        self.worker = worker_name()

    def prepare(self) -> None:
        """Refuse an evicting Redis, and make sure every partition has its consumer group."""
        self.memory.check_policy()
        for name, partitions in self.partitions.items():
            for k in partitions:
                PartitionStream(self.redis, self.keys, name, k).ensure_group()
        self._prepared = True

    def run_once(self) -> list[str]:
        """One tick, with Redis failures turned into one warning line per interval."""
        self.heartbeat()
        try:
            if not self._prepared:
                self.prepare()
            started = self.tick()
        except ConfigurationError as exc:  # an evicting Redis, found after start-up
            now = self.clock()
            if now >= self._quiet_until:
                log.error("not scheduling: %s", exc)
                self._quiet_until = now + UNREACHABLE_LOG_SECONDS
            return []
        except (redis.RedisError, OperationalError) as exc:  # the data's Redis, or the broker
            now = self.clock()
            if now >= self._quiet_until:
                log.warning("Redis is out of reach (%s); scheduling resumes when it is back", type(exc).__name__)
                self._quiet_until = now + UNREACHABLE_LOG_SECONDS
            return []
        if self._quiet_until:
            log.warning("Redis is reachable again; scheduling resumed")
            self._quiet_until = 0.0
        return started

    def heartbeat(self) -> None:
        """Tell ``health`` and the metrics this worker is alive: every worker, every tick, even
        one that is not the tick's scheduler.  A failure here (Redis full, say) never stops
        the tick, which reports Redis's troubles itself."""
        lasts = max(HEARTBEAT_MIN_SECONDS, HEARTBEAT_TICKS * self.settings.tick_seconds)
        try:
            beat(self.redis, self.keys, self.worker, self.clock(), lasts)
        except redis.RedisError:
            pass

    def tick(self) -> list[str]:
        """Start drains where needed; return the destinations a drain was started for."""
        tick_ms = max(10, int(self.settings.tick_seconds * 800))
        if not self._tick(keys=[self.keys.tick], args=[tick_ms]):
            return []
        now = self.clock()
        self.memory.watch(now)
        plan = [(name, k) for name, partitions in self.partitions.items() for k in partitions]
        pipe = self.redis.pipeline(transaction=False)
        for name, partitions in self.partitions.items():
            pipe.exists(self.keys.pause(name))
            pipe.zrangebyscore(self.keys.retry(name), "-inf", now, start=0, num=len(partitions))
            pipe.zcard(self.keys.retry(name))
            pipe.hget(self.keys.breaker(name), "failures")
        for name, k in plan:
            key = self.keys.stream(name, k)
            pipe.exists(self.keys.lease(name, k))
            pipe.xlen(key)
            pipe.xpending(key, GROUP)
        replies = pipe.execute(raise_on_error=False)
        destinations = {}
        for i, name in enumerate(self.partitions):
            paused, due, waiting, failures = replies[i * 4 : i * 4 + 4]
            down = int(failures or 0) >= OPEN_AFTER
            # One drain per due batch (up to one per partition); while down, one for the probe.
            destinations[name] = (bool(paused), max(len(due or []), int(down and bool(waiting))))
        started = []
        offset = len(self.partitions) * 4
        for j, (name, k) in enumerate(plan):
            leased, length, pending = replies[offset + j * 3 : offset + j * 3 + 3]
            paused, batches = destinations[name]
            if isinstance(pending, Exception):
                PartitionStream(self.redis, self.keys, name, k).ensure_group()
                pending = {"pending": 0}
            held = pending["pending"]
            unread = (length if isinstance(length, int) else 0) - held
            if leased or paused or not (unread > 0 or held > 0 or k < batches):
                continue
            if self._start(name, k):
                started.append(name)
        if now >= self._next_notice_flush:
            self._next_notice_flush = now + NOTICE_FLUSH_SECONDS
            self.notices.flush(self.partitions, now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_SECONDS
            self.housekeeping(now)
        return started

    def _start(self, name: str, partition: int) -> bool:
        token = uuid.uuid4().hex
        if not self.leases.acquire(name, partition, token, self.settings.lease_seconds):
            return False
        try:
            self.start_drain(name, token, partition)
        except BaseException:
            self.leases.release(name, partition, token)  # no task will hold it; schedule again
            raise
        return True

    def housekeeping(self, now: float) -> None:
        ttl = self.settings.dead_letter_ttl_seconds
        if ttl > 0:
            pruned = DeadLetterStore(self.redis, self.keys).prune(now - ttl, self.settings.destinations)
            if pruned:
                log.info("pruned %d dead letters older than %.0f s", pruned, ttl)
        for dest in self.settings.enabled_destinations:
            self.partitions[dest.name] = list(range(dest.partitions)) + self._leftover(dest.name, dest.partitions)

    def _leftover(self, name: str, partitions: int) -> list[int]:
        """Partitions beyond the configured ones that still hold events."""
        extra = range(partitions, MAX_PARTITIONS)
        pipe = self.redis.pipeline(transaction=False)
        for k in extra:
            pipe.xlen(self.keys.stream(name, k))
        found = [k for k, length in zip(extra, pipe.execute()) if length]
        if found:
            log.warning("%s: draining partitions %s left from an earlier parallel_drains", name, found)
        return found
