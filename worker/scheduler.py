"""Starting drain tasks where there is work, from inside every worker.

Each worker runs a small thread that, every ``tick_seconds``, looks at every destination: events
not yet read, events a dead worker left unacknowledged, waiting batches that are due.  Where
there is work and the destination is not backing off, it takes a free drain slot's lease and
sends a ``relay.drain`` task to the destination's queue: one drain, and up to
``parallel_drains`` when the backlog holds a full request for each.  A ``SET NX`` on a tick key lets only
one worker look per tick, however many run.

The producer therefore never talks to Celery: ``enqueue`` is a single Redis transaction, and
nothing rides on broker countdowns.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import bootsteps

from worker.keys import GROUP, Keys
from worker.lease import Leases
from worker.runtime import connect
from worker.stream import EventStream

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger("conversion_relay.scheduler")

#: How often the housekeeping runs (dead-letter retention, stale consumers).
HOUSEKEEPING_SECONDS = 60.0
#: Consumers idle this long with nothing pending are removed from the group.
STALE_CONSUMER_SECONDS = 3600.0


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
        self.streams = {d.name: EventStream(self.redis, self.keys, d.name) for d in settings.enabled_destinations}
        self._next_housekeeping = 0.0

    def prepare(self) -> None:
        for stream in self.streams.values():
            stream.ensure_group()

    def tick(self) -> list[str]:
        """Start drains where needed; return the destinations a drain was started for."""
        tick_ms = max(10, int(self.settings.tick_seconds * 800))
        if not self.redis.set(self.keys.tick, "1", nx=True, px=tick_ms):
            return []
        now = self.clock()
        names = list(self.streams)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            key = self.keys.stream(name)
            slots = self.settings.destination(name).parallel_drains
            pipe.mget([self.keys.lease(name, slot) for slot in range(slots)])
            pipe.exists(self.keys.pause(name))
            pipe.xlen(key)
            pipe.xpending(key, GROUP)
            pipe.xpending_range(key, GROUP, "-", "+", 1, idle=int(self.settings.reclaim_idle_seconds * 1000))
            pipe.zrangebyscore(self.keys.retry(name), "-inf", now, start=0, num=1)
        replies = pipe.execute(raise_on_error=False)
        started = []
        for i, name in enumerate(names):
            leases, paused, length, pending, stale, due = replies[i * 6 : i * 6 + 6]
            if isinstance(pending, Exception) or isinstance(stale, Exception):
                self.streams[name].ensure_group()
                pending, stale = {"pending": 0}, []
            unread = (length if isinstance(length, int) else 0) - pending["pending"]
            if paused or not (unread > 0 or stale or due):
                continue
            wanted = self._drains_wanted(name, unread)
            free = [slot for slot, owner in enumerate(leases) if owner is None]
            running = len(leases) - len(free)
            for slot in free[: max(0, wanted - running)]:
                if self._start(name, slot):
                    started.append(name)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_SECONDS
            self.housekeeping(now)
        return started

    def _drains_wanted(self, name: str, unread: int) -> int:
        """One drain, and one more for each full request's worth of unread events."""
        dest = self.settings.destination(name)
        return min(dest.parallel_drains, 1 + unread // dest.max_events)

    def _start(self, name: str, slot: int) -> bool:
        token = uuid.uuid4().hex
        if not self.leases.acquire(name, slot, token, self.settings.reclaim_idle_seconds):
            return False
        self.start_drain(name, token, slot)
        return True

    def housekeeping(self, now: float) -> None:
        from worker.deadletter import DeadLetterStore

        ttl = self.settings.dead_letter_ttl_seconds
        if ttl > 0:
            pruned = DeadLetterStore(self.redis, self.keys).prune(now - ttl)
            if pruned:
                log.info("pruned %d dead letters older than %.0f s", pruned, ttl)
        for name in self.streams:
            try:
                consumers = self.redis.xinfo_consumers(self.keys.stream(name), GROUP)
            except Exception:  # the stream may not exist yet
                continue
            for consumer in consumers:
                if consumer["pending"] == 0 and consumer["idle"] > STALE_CONSUMER_SECONDS * 1000:
                    self.redis.xgroup_delconsumer(self.keys.stream(name), GROUP, consumer["name"])


class SchedulerStep(bootsteps.StartStopStep):
    """Celery worker bootstep running the scheduler in a thread of the main process."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: object, **kwargs: object) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: object) -> None:
        from tasks.delivery import start_drain
        from worker.app import app

        scheduler = Scheduler(app.relay_settings, start_drain)
        scheduler.prepare()
        self._thread = threading.Thread(target=self._loop, args=(scheduler,), name="relay-scheduler", daemon=True)
        self._thread.start()

    def stop(self, worker: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self, scheduler: Scheduler) -> None:
        while not self._stop.wait(scheduler.settings.tick_seconds):
            try:
                scheduler.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again next tick")
