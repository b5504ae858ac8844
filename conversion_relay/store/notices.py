"""Dead letters counted for notices: one gate per destination and reason, shared by all workers.

Every dead letter adds its events to ``<p>:notice:<d>`` (see :mod:`conversion_relay.store.keys`);
the first one after a quiet interval also wins the gate ``<p>:notice:gate:<d>:<reason>``
(``SET NX PX interval``) and takes the counts gathered since the last notice, in the same
script, so one notice goes out per interval however many workers dead-letter at once, and no
count is reported twice.  Counts gathered while the gate is closed go with the next notice: the
next dead letter's, or the scheduler's flush once the interval is over.
Nothing here names an event or a person: reasons and counts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from conversion_relay.store.keys import Keys

#: Counts nobody collects (the destination stopped failing, or was removed) go after a week.
KEEP_MS = 7 * 24 * 3600 * 1000

# KEYS: the counts hash, the reason's gate.  ARGV: reason, now, interval (ms), then for _ADD the
# events, letters and how long counts are kept (ms).  Whoever sets the gate takes the counts.
_TAKE = """
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return false
end
local reason = ARGV[1]
local taken = redis.call('HMGET', KEYS[1], reason, reason .. ':letters', reason .. ':since')
redis.call('HDEL', KEYS[1], reason, reason .. ':letters', reason .. ':since')
return taken
"""
_ADD = (
    """
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[4])
redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':letters', ARGV[5])
redis.call('HSETNX', KEYS[1], ARGV[1] .. ':since', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
"""
    + _TAKE
)
_FLUSH = (
    """
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') == 0 then
  return false
end
"""
    + _TAKE
)


@dataclass(frozen=True)
class Notice:
    """What one notice reports: events and dead letters of one reason, from ``since`` to ``until``."""

    destination: str
    reason: str
    events: int
    letters: int
    since: float
    until: float


class NoticeCounts:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._client = client
        self._add = client.register_script(_ADD)
        self._flush = client.register_script(_FLUSH)

    def add(
        self, destination: str, reason: str, events: int, letters: int, now: float, interval_seconds: float
    ) -> Notice | None:
        """Count dead letters; a :class:`Notice` if the gate was open (this caller sends it)."""
        keys, args = self._gate(destination, reason, now, interval_seconds)
        return self._notice(destination, reason, now, self._add(keys=keys, args=[*args, events, letters, KEEP_MS]))

    def flush(self, destination: str, now: float, interval_seconds: float) -> list[Notice]:
        """Notices for counts left waiting when their interval ended: letters written while the
        gate was closed are reported once it opens, even if no dead letter follows them."""
        found = []
        for reason in self.pending(destination):
            keys, args = self._gate(destination, reason, now, interval_seconds)
            notice = self._notice(destination, reason, now, self._flush(keys=keys, args=args))
            if notice is not None:
                found.append(notice)
        return found

    def _gate(self, destination: str, reason: str, now: float, interval_seconds: float) -> tuple[list[str], list[Any]]:
        keys = [self.keys.notice(destination), self.keys.notice_gate(destination, reason)]
        return keys, [reason, repr(now), max(1, int(interval_seconds * 1000))]

    @staticmethod
    def _notice(destination: str, reason: str, now: float, taken: Any) -> Notice | None:
        if not taken:
            return None
        counted, letters_counted, since = taken
        return Notice(
            destination=destination,
            reason=reason,
            events=int(counted or 0),
            letters=int(letters_counted or 0),
            since=float(since or now),
            until=now,
        )

    def pending(self, destination: str) -> dict[str, int]:
        """Events counted per reason and not yet reported."""
        raw = self._client.hgetall(self.keys.notice(destination))
        return {k.decode(): int(v) for k, v in raw.items() if b":" not in k}
