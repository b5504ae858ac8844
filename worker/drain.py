"""One drain of a destination: the body of the ``relay.drain`` task.

A drain owns the destination's lease and, until its time budget is spent or the destination
runs dry, repeats one round:

1. renew the lease (each second) and stop if the destination is backing off;
2. send the most overdue waiting batch, if any (looked for twice a second);
3. take over events a dead worker left unacknowledged (``XAUTOCLAIM``), else read new ones: an
   idle drain waits for the first, a drain holding a partial chunk takes what is there;
4. map each event to vendor parts and send every chunk that is full (count or bytes);
5. send the chunks whose oldest part reached the flush deadline; if a chunk is still filling,
   sleep a poll interval so events gather instead of being read one by one.

Under load, reads keep chunks full; when the stream is quiet, the deadline lets a lone event
leave within ``flush_deadline_seconds``.  Events are read into the group's pending list and
released only when their outcome is stored, so a worker killed at any point loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from worker.batching import Batcher, Chunk
from worker.delivery import BATCH, STREAM, Delivery, Ledger
from worker.lease import Leases
from worker.vendors.base import Part

if TYPE_CHECKING:
    from worker.runtime import Runtime
    from worker.stream import Entry

log = logging.getLogger("conversion_relay.drain")

#: Most stream entries read in one round trip.
MAX_READ = 1000
#: How often a drain renews its lease and looks for a back-off set elsewhere (the lease lasts
#: ``reclaim_idle_seconds``, far longer).
HEARTBEAT_SECONDS = 1.0
#: How often a drain looks for waiting batches that became due.
DUE_CHECK_SECONDS = 0.5


@dataclass
class DrainReport:
    destination: str
    read: int = 0
    reclaimed: int = 0
    batches: int = 0
    stopped: str = ""
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)

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
    ) -> None:
        self.rt = rt
        self.sleep = sleep
        self.settings = rt.settings
        self.dest = rt.destination(destination)
        self.name = destination
        self.token = token
        self.slot = slot
        self.clock = clock
        self.leases = Leases(rt.redis, rt.keys)
        self.ledger = Ledger()
        self.delivery = Delivery(rt, self.dest, self.ledger, clock=clock, sleep=sleep)
        cfg = self.dest.settings
        self.batcher = Batcher(
            max_events=cfg.max_events,
            max_bytes=cfg.max_bytes,
            envelope_size=self.dest.adapter.envelope_size,
            max_events_for=self.dest.adapter.max_parts_for,
        )
        self.lease_seconds = self.settings.reclaim_idle_seconds
        #: While a chunk fills, read this often instead of waking for every event.
        self._poll_seconds = min(0.05, self.settings.flush_deadline_seconds / 4)
        self.report = DrainReport(destination=destination)
        self._owned = False
        self._next_heartbeat = 0.0

    def run(self) -> DrainReport:
        started = self.clock()
        try:
            self.report.stopped = self._rounds(started + self.settings.drain_budget_seconds)
            for chunk in self.batcher.drain():
                self._send(chunk)
        finally:
            self.leases.release(self.name, self.slot, self.token)
            self.report.seconds = round(self.clock() - started, 3)
        return self.report

    def _rounds(self, budget_end: float) -> str:
        next_due_check = next_reclaim = 0.0
        while (now := self.clock()) < budget_end:
            if not self._keep_lease():
                return "lease_lost"
            if (self.delivery.paused_until or 0.0) > now:
                return "backing_off"
            if now >= next_due_check:
                if self._send_due_batch():
                    continue
                next_due_check = now + DUE_CHECK_SECONDS
            entries: list[Entry] = []
            if now >= next_reclaim:
                entries = self._reclaim()
                if not entries:
                    next_reclaim = now + self.settings.reclaim_idle_seconds / 4
            room = self._room()
            if not entries:
                # Idle: wait for the first event.  Holding a partial chunk: take what is there.
                linger = 0.0 if self.batcher.held else min(1.0, self.settings.flush_deadline_seconds)
                entries = self.dest.stream.read(self.rt.consumer, room, linger)
            if entries:
                self.report.read += len(entries)
                self._take(entries)
                if len(entries) >= room:
                    continue
            for chunk in self.batcher.expired(self.clock(), self.settings.flush_deadline_seconds):
                self._send(chunk)
            if not self.batcher.held:
                if not entries:
                    return "idle"
                continue
            # The stream is dry for now and a chunk is still filling: let events gather rather
            # than wake for each one (every read costs a round trip on both sides).
            self.sleep(max(0.0, min(self._poll_seconds, self._until_deadline())))
        return "budget_spent"

    def _keep_lease(self) -> bool:
        """Renew the lease at most once per ``HEARTBEAT_SECONDS`` (it lasts far longer, and a
        request per user would otherwise cost a script call each); note any back-off set
        elsewhere.  False once another drain owns the slot."""
        now = self.clock()
        if now >= self._next_heartbeat:
            self._owned, paused_until = self.leases.heartbeat(self.name, self.slot, self.token, self.lease_seconds)
            self.delivery.paused_until = max(paused_until or 0.0, self.delivery.paused_until or 0.0)
            self._next_heartbeat = now + HEARTBEAT_SECONDS
        return self._owned

    def _reclaim(self) -> list[Entry]:
        entries = self.dest.stream.reclaim(self.rt.consumer, self.settings.reclaim_idle_seconds, MAX_READ)
        if entries:
            self.report.reclaimed += len(entries)
            self.rt.redis.hincrby(self.rt.keys.stats(self.name), "reclaimed", len(entries))
            log.warning("%s: took over %d events a stopped worker had left", self.name, len(entries))
        return entries

    def _room(self) -> int:
        """Entries to read now: as many as the batcher may hold (one chunk for a single-group
        vendor, many small ones for a vendor that groups by user)."""
        return max(1, min(MAX_READ, self.batcher.max_held_parts - self.batcher.held))

    def _until_deadline(self) -> float:
        oldest = self.batcher.oldest_enqueued_at
        if oldest is None:
            return 0.0
        return oldest + self.settings.flush_deadline_seconds - self.clock()

    def _take(self, entries: list[Entry]) -> None:
        for entry in entries:
            origin = STREAM + entry.id
            raw = entry.fields.get(b"c") or entry.fields.get(b"n") or b""
            if entry.deliveries > self.settings.max_deliveries:
                self._reject(
                    origin, raw, "redelivered_too_often", f"handed out {entry.deliveries} times without an outcome"
                )
                continue
            try:
                parts = self._parts(entry)
            except Exception as exc:  # a bad stored event must never stop the destination
                log.exception("%s: cannot map stored event %s", self.name, entry.id)
                self._reject(origin, raw, "mapping_error", type(exc).__name__)
                continue
            if not parts:
                self.delivery.skip(origin)
                continue
            self.ledger.hold(origin, len(parts))
            for part in parts:
                if not self.batcher.fits_alone(part.group, part.body):
                    limit = self.dest.settings.max_bytes
                    chunk = Chunk(group=part.group, parts=[part.body], origins=[origin])
                    self.delivery.dead_letter(chunk, "too_large", f"one event is over the {limit}-byte request limit")
                    continue
                for chunk in self.batcher.add(part.group, part.body, origin, entry.enqueued_at):
                    self._send(chunk)

    def _parts(self, entry: Entry) -> list[Part]:
        """Vendor parts of a stored entry: a canonical event (``c``) or a vendor-native item (``n``)."""
        adapter = self.dest.adapter
        canonical = entry.fields.get(b"c")
        if canonical is not None:
            event = orjson.loads(canonical)
            if event.get("event_name") in self.dest.settings.skip_events:
                return []
            return adapter.map_event(event)
        native = orjson.loads(entry.fields[b"n"])
        return adapter.map_native(native["p"], native.get("o"))

    def _reject(self, origin: str, raw: bytes, reason: str, excerpt: str) -> None:
        self.ledger.hold(origin, 1)
        self.delivery.dead_letter(Chunk(group="", parts=[raw], origins=[origin]), reason, excerpt)

    def _send_due_batch(self) -> bool:
        batch = self.rt.waiting.claim_due(self.name, self.clock(), self.lease_seconds)
        if batch is None:
            return False
        origin = BATCH + batch.id
        self.ledger.hold(origin, len(batch.parts))
        size = self.dest.settings.max_events
        for start in range(0, len(batch.parts), size):
            parts = [p.encode() for p in batch.parts[start : start + size]]
            self._send(
                Chunk(
                    group=batch.group,
                    parts=parts,
                    origins=[origin] * len(parts),
                    attempts=batch.attempts,
                    first_failure_at=batch.first_failure_at,
                )
            )
        return True

    def _send(self, chunk: Chunk) -> None:
        paused_until = self.delivery.paused_until
        if paused_until and paused_until > self.clock():
            self.delivery.defer(chunk, paused_until)
            return
        self._keep_lease()
        outcome = self.delivery.send(chunk)
        self.report.batches += 1
        kind = type(outcome).__name__
        self.report.outcomes[kind] = self.report.outcomes.get(kind, 0) + 1
