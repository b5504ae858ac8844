"""Real parts for the tests: a private redis-server, Celery worker processes, configuration files.

Nothing here talks to a Redis the tests did not start: every server is launched on a free
loopback port with its data in a temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from conversion_relay.config.settings import settings_from_document
from conversion_relay.embedded import EmbeddedRedis, EmbeddedWorker, free_port, write_config
from conversion_relay.vendors.destination import DestinationSettings

__all__ = [
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


def fill_to_oom(client: redis.Redis) -> None:
    """SET ever smaller values until even a one-byte one is refused: Redis is at maxmemory
    now (Redis itself frees a little now and then, so call this right before each check)."""
    n = 0
    for size in (64_000, 4_000, 200, 1):
        while True:
            n += 1
            assert n < 50_000, "Redis never reached maxmemory"
            try:
                client.set(f"filler:{n}", b"x" * size)
            except redis.exceptions.OutOfMemoryError:  # redis-py strips the "OOM" prefix
                break
