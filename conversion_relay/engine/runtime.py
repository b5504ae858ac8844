"""Per-process resources: one Redis client, and one adapter and HTTP session per destination.

Celery's prefork pool forks worker processes; sockets must not be shared across a fork, so the
runtime is rebuilt when the process id changes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conversion_relay.config.rules import require_api_key
from conversion_relay.engine.notices import Notifier
from conversion_relay.engine.transport import Transport
from conversion_relay.store.connection import connect
from conversion_relay.store.deadletter import DeadLetterStore
from conversion_relay.store.keys import Keys
from conversion_relay.store.ratelimit import RateLimiter
from conversion_relay.store.waiting import WaitingBatches
from conversion_relay.vendors import adapter_for

if TYPE_CHECKING:
    from conversion_relay.config.settings import Settings
    from conversion_relay.vendors.base import VendorAdapter
    from conversion_relay.vendors.destination import DestinationSettings


@dataclass
class DestinationRuntime:
    settings: DestinationSettings
    adapter: VendorAdapter
    transport: Transport
    limiter: RateLimiter


class Runtime:
    """``transport_for`` builds each destination's sender; tests pass a stand-in for HTTP."""

    def __init__(
        self, settings: Settings, *, transport_for: Callable[[DestinationSettings], Transport] = Transport
    ) -> None:
        self.settings = settings
        self._transport_for = transport_for
        self.keys = Keys(settings.key_prefix)
        # Blocking reads wait up to the flush deadline; the socket must outwait them.
        self.redis = connect(settings.redis_url, socket_timeout=settings.flush_deadline_seconds + 10.0)
        self.waiting = WaitingBatches(self.redis, self.keys)
        self.dead_letters = DeadLetterStore(self.redis, self.keys)
        self.notices = Notifier(settings, self.redis, self.keys)
        self.consumer = f"{socket.gethostname()}:{os.getpid()}"
        self._destinations: dict[str, DestinationRuntime] = {}

    def destination(self, name: str) -> DestinationRuntime:
        found = self._destinations.get(name)
        if found is None:
            dest = self.settings.destination(name)
            require_api_key(dest)  # no sender is ever built without its key
            found = DestinationRuntime(
                settings=dest,
                adapter=adapter_for(dest),
                transport=self._transport_for(dest),
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
