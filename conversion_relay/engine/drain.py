"""One drain of a destination's partition: the body of the ``relay.drain`` task.

A drain owns one partition by its lease (:mod:`conversion_relay.store.lease`) and, until its time budget is
spent or the partition runs dry, repeats one round:

1. stop if the lease is gone or the destination is backing off;
2. take over what earlier drains of the partition left unresolved, once nothing of theirs can
   still be in flight (:meth:`~conversion_relay.store.stream.PartitionStream.take_over`);
3. send the most overdue waiting batch, if any (looked for twice a second; any partition's drain
   may, the claim is atomic) -- or, on partition 0, with nothing else to send while the
   destination is down, the soonest one, as a probe;
4. read new entries: an idle drain waits for the first, a drain holding a partial chunk takes
   what is there;
5. map each event to vendor parts and send every chunk that is full (count or bytes);
6. send the chunks whose oldest part reached the flush deadline; if a chunk is still filling,
   sleep a poll interval so events gather instead of being read one by one.

The budget holds inside a round too: no request starts after it, and what the drain still holds
then is parked as waiting batches, due at once, for the next drain.  Events are read into the
drain's pending list and released only when their outcome is stored, so a worker killed at any
point loses nothing.  Every counter a drain moves is written in the fenced transaction of the
outcome it counts (:meth:`~conversion_relay.engine.delivery.Delivery._commit`, through
:mod:`conversion_relay.store.stats`), so counts never run ahead of or behind the data; the one
exception, ``reclaimed``, is counted by the take-over script itself, in the same atomic step
as the claim it counts.

What a drain holds in memory is bounded by bytes as well as by count: at most
``HELD_REQUESTS`` requests' worth (``max_bytes`` each) of event bytes -- read and not yet
mapped, in open chunks, in the request being sent -- of which open chunks take at most half.
``XREADGROUP`` has no byte limit, so the first read of a drain takes one entry, and each read
after it takes as many as fit in what is left at the size of the largest entry of the read
before (and never more than the count allows); a take-over measures each entry before it claims
it.  For small events that is the count limit, with one round trip more per drain.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from conversion_relay.engine.breaker import OPEN_AFTER
from conversion_relay.engine.delivery import Delivery
from conversion_relay.engine.ledger import BATCH, STREAM, Ledger
from conversion_relay.errors import LeaseLost
from conversion_relay.outcomes import DeadLetterReason
from conversion_relay.store import backlog
from conversion_relay.store.lease import DrainLease
from conversion_relay.store.stream import PartitionStream
from conversion_relay.vendors.base import Part, Skip
from conversion_relay.vendors.batching import Batcher, Chunk

if TYPE_CHECKING:
    from conversion_relay.engine.runtime import Runtime
    from conversion_relay.store.stream import Entry

log = logging.getLogger("conversion_relay.drain")

#: Most stream entries read in one round trip.
MAX_READ = 1000
#: A drain holds at most this many requests' worth (``max_bytes``) of event bytes; half of it
#: may sit in open chunks, so a read always has room for entries up to a request's size.
HELD_REQUESTS = 4
#: Entries a drain reads first, before it knows how large its partition's entries are.
PROBE_READ = 1
#: How often a drain looks for waiting batches that became due.
DUE_CHECK_SECONDS = 0.5
#: How often a drain looks again for earlier consumers whose requests were still in flight.
TAKE_OVER_CHECK_SECONDS = 0.5


@dataclass
class DrainReport:
    destination: str
    partition: int = 0
    read: int = 0
    reclaimed: int = 0
    batches: int = 0
    stopped: str = ""
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    #: Most event bytes the drain held at once (read and unmapped, in open chunks, being sent).
    held_bytes_peak: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class Drainer:
    def __init__(
        self,
        rt: Runtime,
        destination: str,
        token: str,
        slot: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.rt = rt
        self.sleep = sleep
        self.settings = rt.settings
        self.dest = rt.destination(destination)
        self.name = destination
        self.partition = slot
        self.clock = clock
        self.stream = PartitionStream(rt.redis, rt.keys, destination, slot)
        self.lease = DrainLease(rt.redis, rt.keys, destination, slot, token, self.settings.lease_seconds)
        self.ledger = Ledger()
        self.delivery = Delivery(
            rt, self.dest, self.stream, self.lease, self.ledger, clock=clock, sleep=sleep, rand=rand
        )
        cfg = self.dest.settings
        #: Most event bytes this drain holds at once (see the module docstring).
        self.held_cap = HELD_REQUESTS * cfg.max_bytes
        self.batcher = Batcher(
            max_events=cfg.max_events,
            max_bytes=cfg.max_bytes,
            envelope_size=self.dest.adapter.envelope_size,
            max_held_bytes=self.held_cap // 2,
            max_events_for=self.dest.adapter.max_parts_for,
        )
        #: The largest entry of the last read (0: nothing read yet), which sizes the next read.
        self._entry_bytes = 0
        #: Bytes of the entries of the current read that are not mapped yet.
        self._unmapped_bytes = 0
        #: While a chunk fills, read this often instead of waking for every event.
        self._poll_seconds = min(0.05, self.settings.flush_deadline_seconds / 4)
        #: How long a waiting batch stays claimed while its request is prepared and sent.
        self._claim_seconds = cfg.request_timeout_seconds + self.settings.lease_seconds
        self.report = DrainReport(destination=destination, partition=slot)
        self._earlier_busy = 0

    def run(self) -> DrainReport:
        started = self.clock()
        self.delivery.budget_end = started + self.settings.drain_budget_seconds
        try:
            if not self.lease.start():
                self.report.stopped = "lease_lost"
                return self.report
            self.report.stopped = self._rounds()
            self.delivery.defer_many(self.batcher.drain(), self.clock(), "handed over at the end of a drain")
        except LeaseLost:
            self.report.stopped = "lease_lost"
            log.warning("%s/%d: lost the partition's lease; the next owner takes over", self.name, self.partition)
        except redis.RedisError as exc:
            self.report.stopped = "redis_unavailable"
            log.warning("%s/%d: Redis failed (%s); the next drain resumes", self.name, self.partition, exc)
        finally:
            self.lease.release()
            self.report.seconds = round(self.clock() - started, 3)
        return self.report

    def _rounds(self) -> str:
        next_due_check = next_take_over = 0.0
        budget_end = self.delivery.budget_end
        while (now := self.clock()) < budget_end:
            self.lease.touch(self.settings.lease_seconds)
            if self.lease.lost:
                raise LeaseLost("the heartbeat found the lease gone")
            if (self.delivery.paused_until or 0.0) > now:
                return "backing_off"
            entries: list[Entry] = []
            asked = self._room()
            if now >= next_take_over:
                entries = self._take_over(asked)
                # More may be left (the count or the bytes ran out): look again next round.
                later = 0.0 if entries else TAKE_OVER_CHECK_SECONDS if self._earlier_busy else float("inf")
                next_take_over = now + later
            if now >= next_due_check and not entries:
                if self._send_due_batch(probe=False):
                    continue
                next_due_check = now + DUE_CHECK_SECONDS
            if not entries:
                # Idle: wait for the first event.  Holding a partial chunk: take what is there.
                linger = 0.0 if self.batcher.held else min(1.0, self.settings.flush_deadline_seconds)
                asked = self._read_count(self._room())
                entries = self.stream.read(self.lease.consumer, asked, linger)
            got = len(entries)
            if entries:
                self.report.read += got
                self._take(entries)
                if got >= asked:
                    continue
            for chunk in self.batcher.expired(self.clock(), self.settings.flush_deadline_seconds):
                self._send(chunk)
            if not self.batcher.held:
                if self.clock() >= budget_end:
                    break
                if got or self._earlier_busy:
                    continue
                if self._probe():
                    continue
                return "idle"

            # The stream is dry for now and a chunk is still filling: let events gather rather
            # than wake for each one (every read costs a round trip on both sides).
            self.sleep(max(0.0, min(self._poll_seconds, self._until_deadline())))
        return "budget_spent"

    def _take_over(self, count: int) -> list[Entry]:
        """Entries earlier drains of this partition left, once none of theirs is in flight (as
        many as the bytes the drain may still hold allow: the rest on a later look).  Room for
        one entry more is kept, as for a read: the one being mapped is held twice for a moment."""
        room = self._byte_room()
        budget = room - self._entry_bytes if self._entry_bytes else room // 2
        found = self.stream.take_over(self.lease.token, self.lease.consumer, count, max(1, budget))
        if found is None:
            raise LeaseLost("the partition passed to another drain")
        entries, self._earlier_busy = found
        if entries:
            self.report.reclaimed += len(entries)
            log.warning("%s/%d: took over %d events an earlier drain had left", self.name, self.partition, len(entries))
        return entries

    def _room(self) -> int:
        """Entries to read now: as many as the batcher may hold (one chunk for a single-group
        vendor, many small ones for a vendor that groups by user); while the destination is
        failing, one request's worth, so a failed probe parks little."""
        room = self.batcher.max_held_parts - self.batcher.held
        if self.lease.failures:
            room = min(room, self.dest.settings.max_events)
        return max(1, min(MAX_READ, room))

    def _byte_room(self) -> int:
        """Event bytes the drain may still take in before it holds ``held_cap``."""
        return self.held_cap - self.batcher.held_bytes - self._unmapped_bytes

    def _read_count(self, room: int) -> int:
        """Entries to read: ``room`` as far as the bytes allow at the size of the largest entry
        of the last read, less one (the entry being mapped is held as read and as parts for a
        moment); before the first read, ``PROBE_READ`` to measure.  At least one, so a drain
        always makes progress."""
        if not self._entry_bytes:
            return min(room, PROBE_READ)
        return max(1, min(room, self._byte_room() // self._entry_bytes - 1))

    def _note_held(self, extra: int = 0) -> None:
        """Keep the report's peak of held bytes, with ``extra`` bytes out of the batcher (a chunk
        or a waiting batch being sent)."""
        held = self.batcher.held_bytes + self._unmapped_bytes + extra
        if held > self.report.held_bytes_peak:
            self.report.held_bytes_peak = held

    def _until_deadline(self) -> float:
        oldest = self.batcher.oldest_enqueued_at
        if oldest is None:
            return 0.0
        return oldest + self.settings.flush_deadline_seconds - self.clock()

    def _take(self, entries: list[Entry]) -> None:
        """Map and batch the entries, emptying the list as it goes: an entry is let go once its
        parts are held (or sent), so a read of large events is not held twice over."""
        sizes = [entry.size for entry in entries]
        self._entry_bytes = max(sizes)
        self._unmapped_bytes = sum(sizes)
        self._note_held()
        entries.reverse()
        sizes.reverse()
        while entries:
            self._take_one(entries[-1])
            entries.pop()
            self._unmapped_bytes -= sizes.pop()

    def _take_one(self, entry: Entry) -> None:
        origin = STREAM + entry.id
        stored = backlog.read(entry.fields)
        if entry.deliveries > self.settings.max_deliveries:
            self._reject(
                origin,
                stored,
                DeadLetterReason.REDELIVERED_TOO_OFTEN,
                f"handed out {entry.deliveries} times without an outcome",
            )
            return
        try:
            parts = self._parts(stored)
        except Skip as skip:
            self.delivery.skip(origin, skip.reason)
            return
        except Exception as exc:  # a bad stored event must never stop the destination
            log.exception("%s: cannot map stored event %s", self.name, entry.id)
            self._reject(origin, stored, DeadLetterReason.MAPPING_ERROR, type(exc).__name__)
            return
        if not parts:
            self.delivery.skip(origin, "unmapped_event")
            return
        self.ledger.hold(origin, len(parts))
        for part in parts:
            if not self.batcher.fits_alone(part.group, part.body):
                limit = self.dest.settings.max_bytes
                chunk = Chunk(group=part.group, parts=[part.body], origins=[origin])
                self.delivery.dead_letter(
                    chunk, DeadLetterReason.TOO_LARGE, f"one event is over the {limit}-byte request limit"
                )
                continue
            for chunk in self.batcher.add(part.group, part.body, origin, entry.enqueued_at):
                self._send(chunk)

    def _parts(self, stored: backlog.StoredEntry) -> list[Part]:
        """Vendor parts of a stored entry: a canonical event or a vendor-native item."""
        adapter = self.dest.adapter
        if stored.is_canonical:
            event = stored.canonical_event()
            if event.get("event_name") in self.dest.settings.skip_events:
                raise Skip("skip_events")
            return adapter.map_event(event)
        operation, payload = stored.native_item()
        return adapter.map_native(payload, operation)

    def _reject(self, origin: str, stored: backlog.StoredEntry, reason: DeadLetterReason, excerpt: str) -> None:
        """Dead-letter a stored entry as it is, so that a replay maps it again."""
        self.ledger.hold(origin, 1)
        chunk = Chunk(group="", parts=[stored.raw], origins=[origin])
        self.delivery.dead_letter(chunk, reason, excerpt, entry_field=stored.field.decode())

    def _probe(self) -> bool:
        """With nothing else to send while the destination counts as down, the soonest waiting
        batch is the probe, due or not: recovery is noticed within a probe interval, not at the
        end of a batch's long backoff."""
        return self.partition == 0 and self.lease.failures >= OPEN_AFTER and self._send_due_batch(probe=True)

    def _send_due_batch(self, *, probe: bool) -> bool:
        lease = (self.stream.lease_key, self.lease.token, self.lease.ttl_ms)
        batch = self.rt.waiting.claim(self.name, lease, self.clock(), self._claim_seconds, probe=probe)
        if batch is None:
            return False
        origin = BATCH + batch.id
        self.ledger.hold(origin, len(batch.parts))
        parts = [p.encode() for p in batch.parts]
        self._note_held(sum(map(len, parts)))
        for chunk in self._rechunk(batch.group, parts, origin):
            chunk.attempts, chunk.first_failure_at = batch.attempts, batch.first_failure_at
            self._send(chunk)
        return True

    def _rechunk(self, group: str, parts: list[bytes], origin: str) -> list[Chunk]:
        """A waiting batch's parts in requests within today's limits (they may have been lowered
        since it was parked, or it is a replayed dead letter); a part too large alone is
        dead-lettered without a request."""
        cfg = self.dest.settings
        batcher = Batcher(
            max_events=cfg.max_events,
            max_bytes=cfg.max_bytes,
            envelope_size=self.dest.adapter.envelope_size,
            max_held_parts=len(parts) + 1,
            max_events_for=self.dest.adapter.max_parts_for,
        )
        chunks: list[Chunk] = []
        for body in parts:
            if batcher.fits_alone(group, body):
                chunks += batcher.add(group, body, origin, 0.0)
            else:
                alone = Chunk(group=group, parts=[body], origins=[origin])
                too_large = f"one event is over the {cfg.max_bytes}-byte request limit"
                self.delivery.dead_letter(alone, DeadLetterReason.TOO_LARGE, too_large)
        return chunks + batcher.drain()

    def _send(self, chunk: Chunk) -> None:
        self._note_held(sum(map(len, chunk.parts)))
        outcome = self.delivery.send(chunk)
        if outcome is None:
            return
        self.report.batches += 1
        kind = type(outcome).__name__
        self.report.outcomes[kind] = self.report.outcomes.get(kind, 0) + 1
