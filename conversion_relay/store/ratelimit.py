"""A request-rate limit held by all workers of a destination together, in Redis.

Vendors count requests per account (Gravity Field: 500 per second per section), not per worker
process, so the limit lives in Redis: a sorted set of the times of the requests let through,
trimmed to the window, checked and extended by one Lua script.  The script reads Redis's own
clock, so workers on machines whose clocks disagree still count the same window.

The window is slightly longer than a second (``WINDOW_SECONDS``): requests arrive at the vendor
a few milliseconds after they were let through, by different amounts, and counting over a
slightly longer window keeps any one second the vendor sees within the limit.
"""

from __future__ import annotations

import itertools
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from conversion_relay.store.keys import Keys

#: Seconds over which requests are counted against a per-second limit (see module docstring).
WINDOW_SECONDS = 1.05

_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], t, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - t)
"""


class RateLimiter:
    """Lets ``per_second`` requests through per window for everyone sharing ``key``."""

    def __init__(self, client: redis.Redis, keys: Keys, key: str, per_second: float) -> None:
        self.key = keys.rate(key)
        self.limit = max(1, int(per_second)) if per_second > 0 else 0
        # A rate below one per second, or with a fraction, is the same count over a longer window.
        self.window = WINDOW_SECONDS * self.limit / per_second if per_second > 0 else WINDOW_SECONDS
        self._acquire = client.register_script(_ACQUIRE)
        self._ids = itertools.count()
        self._me = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"

    def acquire(self) -> float:
        """Take a slot if one is free (returns 0), else return the seconds until one frees up."""
        if not self.limit:
            return 0.0
        member = f"{self._me}:{next(self._ids)}"
        return float(self._acquire(keys=[self.key], args=[self.window, self.limit, member]))
