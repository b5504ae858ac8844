"""How long a failed batch waits before its next attempt.  Pure functions, seconds throughout."""

from __future__ import annotations

import random
from collections.abc import Callable


def compute_backoff(
    attempt: int,
    *,
    base_seconds: float,
    cap_seconds: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Capped exponential backoff with full jitter.

    The wait is uniform in ``[0, min(cap, base * 2 ** (attempt - 1))]``: spreading retries over
    the whole window keeps many failed batches from returning to a recovering vendor at once.

    Args:
        attempt: attempts made so far (1 after the first failure).
        rand: a source of floats in [0, 1), replaceable in tests.

    >>> compute_backoff(3, base_seconds=1, cap_seconds=600, rand=lambda: 0.5)
    2.0
    """
    if attempt < 1:
        raise ValueError("attempt: counts from 1, the first failed attempt.")
    exponent = min(attempt - 1, 62)
    window = min(cap_seconds, base_seconds * (2**exponent))
    return window * rand()


def retry_delay(
    attempt: int,
    retry_after_seconds: float | None,
    *,
    base_seconds: float,
    cap_seconds: float,
    max_retry_after_seconds: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds until the next attempt: the backoff, but never sooner than the vendor asked."""
    delay = compute_backoff(attempt, base_seconds=base_seconds, cap_seconds=cap_seconds, rand=rand)
    if retry_after_seconds is not None:
        delay = max(delay, min(retry_after_seconds, max_retry_after_seconds))
    return delay
