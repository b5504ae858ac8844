"""Erasure of one person's events from everything the relay stores.

An erasure request names a person by e-mail address, phone number or external id (any of them:
an event matching one is theirs); :mod:`conversion_relay.ops.personal` hashes them as the producer does and
tells which stored events are theirs.  Three places hold events:

- the partitions of every destination's stream, entries unread or pending in a consumer group
  (removed with ``XACK`` + ``XDEL``);
- waiting batches (the person's parts are taken out; an emptied batch is deleted);
- dead letters (likewise, per-event errors re-numbered).

Racing a drain.  A drain holds in memory what it read (pending entries of its consumer) and the
waiting batch it claimed.  Each removal is one script, atomic against the drain's reads and
claims; when the removed entry is pending, or the batch is claimed, the script also deletes the
partition's lease (for a claimed batch, every partition's of the destination).  The drain is
thereby fenced (:mod:`conversion_relay.store.fenced`): it can neither start another request nor record any
outcome, so it cannot write the person's event back as a waiting batch or a dead letter; its
other events stay pending and the next drain takes them over.  What a drain had already put in
a request before the erase cannot be called back: that request may still reach the vendor.
Stores move events forward (stream, then waiting batch, then dead letter), and the places are
searched in that order; a pass is repeated (up to ``ROUNDS``) while it still found something,
which also catches a dead letter replayed meanwhile.  Events enqueued after the erase began are
not its concern: erase again after the source stopped sending.

Every write is a deletion, or follows one in its script, so an erase works when Redis is full
(see :mod:`conversion_relay.store.fenced`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conversion_relay.ops.personal import Person, is_theirs, person
from conversion_relay.store import backlog
from conversion_relay.store.deadletter import DeadLetterStore
from conversion_relay.store.keys import GROUP, Keys
from conversion_relay.store.waiting import WaitingBatches
from conversion_relay.vendors.destination import MAX_PARTITIONS

if TYPE_CHECKING:
    import redis

    from conversion_relay.config.settings import Settings

__all__ = ["PLACES", "Eraser", "Person", "person"]

PLACES = ("stream", "waiting", "dead_letters")
#: Most passes over the three places in one erase.
ROUNDS = 3
#: Entries read (and removed) per round trip.
PAGE = 500

# KEYS: stream partition, its lease.  ARGV: group, then entry ids.  Deletes the entries and
# acknowledges them; if one was pending (a drain may hold it), the lease goes too, fencing the
# drain that holds it.  XDEL first: it frees memory.
_ENTRIES = """
local held = 0
for i = 2, #ARGV do
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if ok and #p > 0 then held = held + 1 end
end
local removed = redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
local stopped = 0
if held > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
  stopped = redis.call('DEL', KEYS[2])
end
return {removed, held, stopped}
"""


@dataclass
class Tally:
    """What an erase found and removed, per place and destination (events, or vendor parts)."""

    found: dict[str, dict[str, int]] = field(default_factory=lambda: {p: {} for p in PLACES})
    removed: dict[str, dict[str, int]] = field(default_factory=lambda: {p: {} for p in PLACES})
    held_by_drains: int = 0
    drains_stopped: int = 0
    rounds: int = 0
    #: Told of each page of entries searched (stream entries, waiting batches, dead letters).
    progress: Callable[[int], None] | None = None

    def searched(self, n: int) -> None:
        if self.progress and n:
            self.progress(n)

    def add(self, which: dict[str, dict[str, int]], place: str, destination: str, n: int) -> None:
        if n:
            which[place][destination] = which[place].get(destination, 0) + n

    @staticmethod
    def total(which: dict[str, dict[str, int]]) -> int:
        return sum(n for per_destination in which.values() for n in per_destination.values())


class Eraser:
    """Finds and removes one person's events; see the module docstring for what is guaranteed."""

    def __init__(self, settings: Settings, client: redis.Redis, keys: Keys | None = None) -> None:
        self.settings = settings
        self.redis = client
        self.keys = keys or Keys(settings.key_prefix)
        self._entries = client.register_script(_ENTRIES)
        self.waiting = WaitingBatches(client, self.keys)
        self.letters = DeadLetterStore(client, self.keys)

    def erase(
        self,
        who: Person,
        *,
        dry_run: bool = True,
        now: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Remove (or, with ``dry_run``, count) every stored event of ``who``.

        ``now`` (epoch s, default the clock) tells claimed waiting batches from unclaimed ones;
        ``progress`` is told how many entries each page searched held.
        """
        tally = Tally(progress=progress)
        needles = who.needles
        for _ in range(1 if dry_run else ROUNDS):
            tally.rounds += 1
            before = Tally.total(tally.found)
            self._streams(needles, dry_run, tally)
            self._waiting(needles, dry_run, tally, time.time() if now is None else now)
            self._dead_letters(needles, dry_run, tally)
            if Tally.total(tally.found) == before:
                break
        return {
            "dry_run": dry_run,
            "identifiers": who.kinds,
            "found": tally.found,
            "removed": tally.removed,
            "events_found": Tally.total(tally.found),
            "events_removed": Tally.total(tally.removed),
            "held_by_drains": tally.held_by_drains,
            "drains_stopped": tally.drains_stopped,
            "rounds": tally.rounds,
        }

    # -- where events are ----------------------------------------------------------------------

    def _keys_like(self, kind: str) -> Iterator[tuple[str, str]]:
        """(key, rest after ``<p>:<kind>:``) of every key of that kind, configured or not."""
        head = f"{self.keys.prefix}:{kind}:"
        for key in self.redis.scan_iter(match=head + "*", count=1000):
            text = key.decode()
            yield text, text[len(head) :]

    def destinations(self) -> list[str]:
        """Configured destinations and any others that still hold streams or waiting batches."""
        names = set(self.settings.destinations)
        for kind in ("stream", "retry"):
            names.update(rest.split(":", 1)[0] for _, rest in self._keys_like(kind))
        return sorted(names)

    def _streams(self, needles: frozenset[str], dry_run: bool, tally: Tally) -> None:
        for key, rest in self._keys_like("stream"):
            destination, _, partition = rest.partition(":")
            if not (partition or "0").isdigit() or self.redis.type(key) != b"stream":
                continue
            lease = self.keys.lease(destination, int(partition or 0))
            start = "-"
            while page := self.redis.xrange(key, start, "+", count=PAGE):
                start = "(" + page[-1][0].decode()
                tally.searched(len(page))
                ids = [i.decode() for i, fields in page if _entry_is_theirs(fields, needles)]
                tally.add(tally.found, "stream", destination, len(ids))
                if ids and not dry_run:
                    removed, held, stopped = self._entries(keys=[key, lease], args=[GROUP, *ids])
                    tally.add(tally.removed, "stream", destination, int(removed))
                    tally.held_by_drains += int(held)
                    tally.drains_stopped += int(stopped)

    def _pages(self, index: str) -> Iterator[list[str]]:
        """Members of a sorted set a page at a time, safe to remove from while iterating: the
        next page starts after the members of this one that are still there."""
        offset = 0
        while ids := [i.decode() for i in self.redis.zrange(index, offset, offset + PAGE - 1)]:
            yield ids
            pipe = self.redis.pipeline(transaction=False)
            for member in ids:
                pipe.zscore(index, member)
            offset += sum(score is not None for score in pipe.execute())

    def _waiting(self, needles: frozenset[str], dry_run: bool, tally: Tally, now: float) -> None:
        for destination in self.destinations():
            index = self.keys.retry(destination)
            leases = [self.keys.lease(destination, k) for k in range(MAX_PARTITIONS)]
            for ids in self._pages(index):
                tally.searched(len(ids))
                for batch_id in ids:
                    for _attempt in range(3):  # again if the batch changed between read and write
                        found = self.waiting.parts_of(destination, batch_id)
                        if found is None:
                            break
                        raw, parts, group = found
                        keep = [p for p in parts if not is_theirs(p, needles, group)]
                        gone = len(parts) - len(keep)
                        if not gone or dry_run:
                            tally.add(tally.found, "waiting", destination, gone)
                            break
                        done, stopped = self.waiting.cut(destination, batch_id, raw, keep, now, leases)
                        if done == 1:
                            tally.add(tally.found, "waiting", destination, gone)
                            tally.add(tally.removed, "waiting", destination, gone)
                            tally.drains_stopped += stopped
                        if done >= 0:
                            break

    def _dead_letters(self, needles: frozenset[str], dry_run: bool, tally: Tally) -> None:
        for ids in self._pages(self.keys.dlq):
            tally.searched(len(ids))
            for entry_id in ids:
                for _attempt in range(3):  # again if the letter changed between read and write
                    found = self.letters.parts_of(entry_id)
                    if found is None:
                        break
                    raw, parts, group, name, errors = found
                    mine = {n for n, p in enumerate(parts) if is_theirs(p, needles, group)}
                    if not mine or dry_run:
                        tally.add(tally.found, "dead_letters", name, len(mine))
                        break
                    kept = [n for n in range(len(parts)) if n not in mine]
                    done = self.letters.cut(entry_id, name, raw, kept, errors)
                    if done == 1:
                        tally.add(tally.found, "dead_letters", name, len(mine))
                        tally.add(tally.removed, "dead_letters", name, len(mine))
                    if done >= 0:
                        break


def _entry_is_theirs(fields: dict[bytes, bytes], needles: frozenset[str]) -> bool:
    body = backlog.read(fields).raw
    return bool(body) and is_theirs(body, needles)
