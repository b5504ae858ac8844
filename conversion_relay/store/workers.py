"""Which workers are alive: a heartbeat every scheduler thread writes, read by ``health`` and the metrics.

One sorted set, ``<p>:workers``, rather than a key per worker: a reader finds every worker with
one command instead of a SCAN, and a worker that died without a word drops out when its score
(the time its heartbeat lapses) is past.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from conversion_relay.store.keys import Keys


def worker_name() -> str:
    """``<hostname>:<pid>``: one name per worker process, different on every host."""
    return f"{socket.gethostname()}:{os.getpid()}"


def beat(client: redis.Redis, keys: Keys, name: str, now: float, lasts: float) -> None:
    """Say that worker ``name`` is alive until ``now + lasts``, and drop workers long lapsed."""
    pipe = client.pipeline(transaction=False)
    pipe.zadd(keys.workers, {name: now + lasts})
    pipe.zremrangebyscore(keys.workers, "-inf", now - 3600)
    pipe.execute()


def alive(client: redis.Redis, keys: Keys, now: float) -> list[str]:
    """The workers whose heartbeat has not lapsed at ``now``."""
    return sorted(m.decode() for m in client.zrangebyscore(keys.workers, now, "+inf"))
