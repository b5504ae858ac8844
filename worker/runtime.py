"""Per-process resources: one Redis client, and one adapter and HTTP session per destination.

Celery's prefork pool forks worker processes; sockets must not be shared across a fork, so the
runtime is rebuilt when the process id changes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.deadletter import DeadLetterStore
from worker.keys import Keys
from worker.ratelimit import RateLimiter
from worker.transport import Transport
from worker.vendors import adapter_for
from worker.waiting import WaitingBatches

if TYPE_CHECKING:
    from worker.settings import DestinationSettings, Settings
    from worker.vendors.base import VendorAdapter


def connect(url: str, *, socket_timeout: float | None = 10.0) -> redis.Redis:
    """A Redis client with the timeouts and health checks every part of the relay uses.

    The client never retries a command by itself: redis-py would re-send one that timed out,
    and a re-sent append or outcome may be one Redis already ran.  The relay decides.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )


@dataclass
class DestinationRuntime:
    settings: DestinationSettings
    adapter: VendorAdapter
    transport: Transport
    limiter: RateLimiter


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        # Blocking reads wait up to the flush deadline; the socket must outwait them.
        self.redis = connect(settings.redis_url, socket_timeout=settings.flush_deadline_seconds + 10.0)
        self.waiting = WaitingBatches(self.redis, self.keys)
        self.dead_letters = DeadLetterStore(self.redis, self.keys)
        self.consumer = f"{socket.gethostname()}:{os.getpid()}"
        self._destinations: dict[str, DestinationRuntime] = {}

    def destination(self, name: str) -> DestinationRuntime:
        found = self._destinations.get(name)
        if found is None:
            dest = self.settings.destination(name)
            found = DestinationRuntime(
                settings=dest,
                adapter=adapter_for(dest),
                transport=Transport(dest),
                limiter=RateLimiter(self.redis, self.keys, dest.rate_limit_key, dest.rate_limit_per_second),
            )
            self._destinations[name] = found
        return found


_current: tuple[int, Runtime] | None = None


def runtime(settings: Settings) -> Runtime:
    """The runtime of this process for ``settings``."""
    global _current
    pid = os.getpid()
    if _current is None or _current[0] != pid or _current[1].settings is not settings:
        _current = (pid, Runtime(settings))
    return _current[1]
