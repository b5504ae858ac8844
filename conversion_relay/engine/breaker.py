"""A destination's breaker: back off as a whole while it fails, probe on a capped schedule.

After a transient failure the next request would most likely meet the same outage or rate
limit, so the whole destination pauses (``<p>:pause:<d>``) while the failed batch waits for its
own, longer backoff.  The pause grows with the run of consecutive failures but never past
``probe_interval_seconds``: when it ends, the next request is the probe (the breaker
half-opens), and a vendor's ``Retry-After`` is honoured all the same.  The first answer after
a run of :data:`OPEN_AFTER` failures or more closes the breaker and makes every waiting batch
due at once, so the backlog flows again within seconds of the vendor's recovery.  A lone
failure among successes (one batch the vendor chokes on) leaves the others' schedule alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Consecutive transient failures after which the destination counts as down (breaker open).
OPEN_AFTER = 3


def probe_delay(failures: int, *, base_seconds: float, cap_seconds: float, rand: Callable[[], float]) -> float:
    """How long the destination pauses after its ``failures``-th failure in a row.

    Exponential in the run, capped, with half jitter: probes from many destinations spread out
    but never come back at once.

    >>> probe_delay(10, base_seconds=1, cap_seconds=5, rand=lambda: 1.0)
    5.0
    """
    window = min(cap_seconds, base_seconds * 2 ** min(max(failures, 1) - 1, 30))
    return window * (0.5 + 0.5 * rand())


def record_failure(write: Any, key: str, now: float) -> None:
    """Count one more failure in the run (inside the outcome's transaction)."""
    write.hincrby(key, "failures", 1)
    write.hsetnx(key, "since", repr(now))


def close(write: Any, breaker_key: str, pause_key: str) -> None:
    """The vendor answered: end the run and the back-off."""
    write.delete(breaker_key, pause_key)
