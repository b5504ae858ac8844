"""Which drain task owns a partition of a destination, and for how long.

A partition has one owner at a time: the drain task holding its lease, a Redis key with the
task's token and an expiry of ``lease_seconds``.  The scheduler takes the lease and starts the
task; the task's heartbeat thread renews it every ``lease_seconds / 5`` while the task works --
also while a request is in flight -- and lets it run out if the task's main thread stops making
progress.  A killed worker's lease therefore runs out within ``lease_seconds`` and the
scheduler starts a new owner.

Ownership is fenced, not assumed: every request starts with :meth:`DrainLease.begin_request`,
which checks the token and marks until when the request may be in flight, and every outcome is
written by :mod:`conversion_relay.store.fenced`, which checks it again.  A drain that lost its lease can
therefore neither send nor acknowledge, and a new owner takes a previous consumer's events
over only once that consumer's last request is over (see :mod:`conversion_relay.store.stream`).

Every script here starts with a write that cannot grow memory, so leases still move when Redis
is full (see :mod:`conversion_relay.store.fenced`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from conversion_relay.store.fenced import FencedWrite, fenced_script
from conversion_relay.store.keys import GROUP

if TYPE_CHECKING:
    from conversion_relay.store.keys import Keys

log = logging.getLogger("conversion_relay.lease")

#: A request's in-flight mark lasts this much longer than the request may (clock steps, the
#: time between the mark and the request leaving).
INFLIGHT_MARGIN_SECONDS = 1.0

# KEYS: lease, in-flight markers.  ARGV: token, ttl ms, consumer.
_ACQUIRE = """
redis.call('HDEL', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_GIVE_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease.  ARGV: the task's token, this run's token, ttl ms.  The lease passes from the
# task's token to a token of this run: a task the broker hands out twice (its worker died, or it
# ran past a timeout) owns the partition in one run at most, and the other is fenced out.
_TAKE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: lease, pause, breaker.  ARGV: token, ttl ms.  PEXPIRE never grows memory.
_HEARTBEAT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, false, false} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, redis.call('GET', KEYS[2]), redis.call('HGET', KEYS[3], 'failures')}
"""

# KEYS: lease, in-flight markers, pause, breaker, retry zset, batch hash (or lease again).
# ARGV: token, consumer, request window ms, batch id ('' for none), batch due time, ttl ms.
# Renews the lease, marks the request in flight (Redis time) and, for a waiting batch, keeps it
# claimed past the request.
_BEGIN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, false, false} end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[2], now + tonumber(ARGV[3]))
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[5], 'XX', ARGV[5], ARGV[4])
  redis.call('HSET', KEYS[6], 'claimed_until', ARGV[5])
end
return {1, redis.call('GET', KEYS[3]), redis.call('HGET', KEYS[4], 'failures')}
"""

# KEYS: lease, in-flight markers, stream.  ARGV: token, consumer, group.
# A consumer that holds nothing is removed with its marker, atomically: nothing can strand.
_RELEASE = """
redis.call('HDEL', KEYS[2], ARGV[2])
local ok, held = pcall(redis.call, 'XPENDING', KEYS[3], ARGV[3], '-', '+', 1, ARGV[2])
if ok and #held == 0 then pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[3], ARGV[3], ARGV[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class Leases:
    """The scheduler's side: take a free partition's lease for a new drain task."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._acquire = client.register_script(_ACQUIRE)
        self._give_back = client.register_script(_GIVE_BACK)

    def acquire(self, destination: str, partition: int, token: str, ttl_seconds: float) -> bool:
        keys = [self.keys.lease(destination, partition), self.keys.inflight(destination, partition)]
        return bool(self._acquire(keys=keys, args=[token, int(ttl_seconds * 1000), consumer_name(partition, token)]))

    def release(self, destination: str, partition: int, token: str) -> None:
        """Give back a lease no drain task was started for."""
        self._give_back(keys=[self.keys.lease(destination, partition)], args=[token])


def consumer_name(partition: int, token: str) -> str:
    """The stream consumer of one drain run: one per run, so a new owner can tell its own
    pending entries from those of the drains before it (a task run again included)."""
    return f"{partition}:{token[:16]}"


class DrainLease:
    """The drain's side: keep the lease alive while working, fence every request and write.

    ``clock`` is monotonic time, used only for durations (the heartbeat and the watchdog).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        destination: str,
        partition: int,
        token: str,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = client
        self.destination = destination
        self.partition = partition
        self.task_token = token
        #: This run's token (and stream consumer): the task's token is given up at start.
        self.token = uuid.uuid4().hex
        self.consumer = consumer_name(partition, self.token)
        self.ttl_ms = int(ttl_seconds * 1000)
        self.interval = ttl_seconds / 5
        self.clock = clock
        self._lease_key = keys.lease(destination, partition)
        self._inflight_key = keys.inflight(destination, partition)
        self._stream_key = keys.stream(destination, partition)
        self._pause_key = keys.pause(destination)
        self._breaker_key = keys.breaker(destination)
        self._retry_key = keys.retry(destination)
        self._keys = keys
        self._take = client.register_script(_TAKE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._begin = client.register_script(_BEGIN)
        self._release = client.register_script(_RELEASE)
        self._fenced = fenced_script(client)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress_until = 0.0
        #: Set once the lease is known to be someone else's (or expired).
        self.lost = False
        #: The destination's back-off (epoch s) and failure run, as last seen in Redis.
        self.paused_until: float | None = None
        self.failures = 0

    def start(self) -> bool:
        """Take the lease over from the task's token and keep it alive from a thread; False if
        the task's token no longer holds it (another drain owns the partition by now)."""
        self.touch(self.interval * 5)
        if not self._take(keys=[self._lease_key], args=[self.task_token, self.token, self.ttl_ms]):
            self.lost = True
            return False
        if not self._renew():
            return False
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.destination}", daemon=True)
        self._thread.start()
        return True

    def touch(self, seconds: float) -> None:
        """The main thread is working and will check in again within ``seconds``; past that
        (plus a lease) the heartbeat stops renewing, so a stuck drain cannot hold a partition."""
        self._progress_until = max(self._progress_until, self.clock() + seconds)

    def _renew(self) -> bool:
        owned, paused, failures = self._heartbeat(
            keys=[self._lease_key, self._pause_key, self._breaker_key], args=[self.token, self.ttl_ms]
        )
        self._note(paused, failures)
        if not owned:
            self.lost = True
        return bool(owned)

    def _beat(self) -> None:
        quiet_until = 0.0
        while not self._stop.wait(self.interval):
            if self.clock() > self._progress_until + self.interval * 5:
                log.error("%s/%d: drain made no progress; letting its lease run out", self.destination, self.partition)
                return
            try:
                if not self._renew():
                    return
            except redis.RedisError as exc:
                if self.clock() >= quiet_until:
                    log.warning("%s: cannot renew the lease (%s); retrying", self.destination, type(exc).__name__)
                    quiet_until = self.clock() + 30.0

    def begin_request(self, window_seconds: float, batch_id: str | None = None, now: float = 0.0) -> bool:
        """Check ownership and mark a request in flight for ``window_seconds``.

        For a chunk of a waiting batch, the batch stays claimed until the request is over.
        False if the lease is lost: the request must not be sent.
        """
        window = window_seconds + INFLIGHT_MARGIN_SECONDS
        self.touch(window)
        batch_key = self._keys.batch(self.destination, batch_id) if batch_id else self._lease_key
        owned, paused, failures = self._begin(
            keys=[
                self._lease_key,
                self._inflight_key,
                self._pause_key,
                self._breaker_key,
                self._retry_key,
                batch_key,
            ],
            args=[self.token, self.consumer, int(window * 1000), batch_id or "", now + window, self.ttl_ms],
        )
        self._note(paused, failures)
        if not owned:
            self.lost = True
        return bool(owned)

    def _note(self, paused: bytes | None, failures: bytes | None) -> None:
        self.paused_until = float(paused) if paused else None
        self.failures = int(failures) if failures else 0

    def write(self) -> FencedWrite:
        """A batch of writes to run only while this drain owns the partition."""
        return FencedWrite(self._fenced, self._lease_key, self._inflight_key, self.token, self.consumer)

    def release(self) -> None:
        """Stop the heartbeat; give the lease back and drop this drain's consumer if it holds
        nothing (what it still holds is taken over by the next owner)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval * 2)
        try:
            self._release(
                keys=[self._lease_key, self._inflight_key, self._stream_key], args=[self.token, self.consumer, GROUP]
            )
        except redis.RedisError as exc:
            log.warning("%s: could not release the lease (%s); it runs out by itself", self.destination, exc)
