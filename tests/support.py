"""Real parts for the tests: a private redis-server, Celery worker processes, configuration files.

Nothing here talks to a Redis the tests did not start: every server is launched on a free
loopback port with its data in a temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from conversion_relay.embedded import EmbeddedRedis, EmbeddedWorker, free_port, write_config
from worker.settings import DestinationSettings, settings_from_document

__all__ = [
    "FakeClock",
    "RedisServer",
    "WorkerProcess",
    "destination_settings",
    "free_port",
    "wait_for",
    "write_config",
]

#: A Redis URL for settings that are only built, never connected.
UNUSED_REDIS = "redis://settings-only.invalid:6379/0"


class RedisServer(EmbeddedRedis):
    """The tests' private server: four databases, nothing kept on disk."""

    def __init__(self) -> None:
        super().__init__(databases=4)


class FakeClock:
    """A clock a test sets by hand (``clock.now += 3600``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def destination_settings(name: str, table: dict[str, Any], **env: str) -> DestinationSettings:
    """One ``[destinations.<name>]`` table as the settings loader turns it into settings."""
    settings = settings_from_document({"destinations": {name: table}}, {"REDIS_URL": UNUSED_REDIS, **env})
    return settings.destinations[name]


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


WorkerProcess = EmbeddedWorker
