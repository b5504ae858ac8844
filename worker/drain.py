"""One drain of a destination: the body of the ``relay.drain`` task.

A drain owns the destination's lease and, until its time budget is spent or the destination
runs dry, repeats one round:

1. renew the lease and stop if the destination is backing off;
2. send the most overdue waiting batch, if any;
3. take over events a dead worker left unacknowledged (``XAUTOCLAIM``), else read new ones,
   waiting at most until the oldest held event reaches the flush deadline;
4. map each event to vendor parts and send every chunk that is full (count or bytes);
5. when nothing new arrives, send the chunks whose oldest part reached the flush deadline.

Under load, reads keep chunks full; when the stream is quiet, the deadline lets a lone event
leave within ``flush_deadline_seconds``.  Events are read into the group's pending list and
released only when their outcome is stored, so a worker killed at any point loses nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.batching import Batcher, Chunk
from worker.delivery import BATCH, STREAM, Delivery, Ledger
from worker.lease import Leases

if TYPE_CHECKING:
    from worker.runtime import Runtime
    from worker.stream import Entry

log = logging.getLogger("conversion_relay.drain")

#: Most stream entries read in one round trip.
MAX_READ = 1000


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
    def __init__(self, rt: Runtime, destination: str, token: str, *, clock: Callable[[], float] = time.time) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.dest = rt.destination(destination)
        self.name = destination
        self.token = token
        self.clock = clock
        self.leases = Leases(rt.redis, rt.keys)
        self.ledger = Ledger()
        self.delivery = Delivery(rt, self.dest, self.ledger, clock=clock)
        cfg = self.dest.settings
        self.batcher = Batcher(
            max_events=cfg.max_events,
            max_bytes=cfg.max_bytes,
            envelope_size=self.dest.adapter.envelope_size,
        )
        self.lease_seconds = self.settings.reclaim_idle_seconds
        self.report = DrainReport(destination=destination)

    def run(self) -> DrainReport:
        started = self.clock()
        try:
            self.report.stopped = self._rounds(started + self.settings.drain_budget_seconds)
            for chunk in self.batcher.drain():
                self._send(chunk)
        finally:
            self.leases.release(self.name, self.token)
            self.report.seconds = round(self.clock() - started, 3)
        return self.report

    def _rounds(self, budget_end: float) -> str:
        next_reclaim = 0.0
        while self.clock() < budget_end:
            owned, paused_until = self.leases.heartbeat(self.name, self.token, self.lease_seconds)
            if not owned:
                return "lease_lost"
            until = max(paused_until or 0.0, self.delivery.paused_until or 0.0)
            if until > self.clock():
                self.delivery.paused_until = until
                return "backing_off"
            if self._send_due_batch():
                continue
            entries: list[Entry] = []
            if self.clock() >= next_reclaim:
                entries = self.dest.stream.reclaim(self.rt.consumer, self.settings.reclaim_idle_seconds, MAX_READ)
                if entries:
                    self.report.reclaimed += len(entries)
                    self.rt.redis.hincrby(self.rt.keys.stats(self.name), "reclaimed", len(entries))
                    log.warning("%s: took over %d events a stopped worker had left", self.name, len(entries))
                else:
                    next_reclaim = self.clock() + self.settings.reclaim_idle_seconds / 4
            if not entries:
                entries = self.dest.stream.read(self.rt.consumer, self._room(), self._wait_seconds())
            if entries:
                self.report.read += len(entries)
                self._take(entries)
                continue
            expired = self.batcher.expired(self.clock(), self.settings.flush_deadline_seconds)
            for chunk in expired:
                self._send(chunk)
            if not expired and not self.batcher.held:
                return "idle"
        return "budget_spent"

    def _room(self) -> int:
        return max(1, min(MAX_READ, self.dest.settings.max_events - self.batcher.held, MAX_READ))

    def _wait_seconds(self) -> float:
        """How long a read may wait: until the oldest held part is due, or a short linger."""
        oldest = self.batcher.oldest_enqueued_at
        if oldest is None:
            return min(1.0, self.settings.flush_deadline_seconds)
        return max(0.0, oldest + self.settings.flush_deadline_seconds - self.clock())

    def _take(self, entries: list[Entry]) -> None:
        adapter = self.dest.adapter
        for entry in entries:
            origin = STREAM + entry.id
            raw = entry.fields.get(b"c", b"")
            if entry.deliveries > self.settings.max_deliveries:
                self._reject(
                    origin, raw, "redelivered_too_often", f"handed out {entry.deliveries} times without an outcome"
                )
                continue
            try:
                parts = adapter.map_event(json.loads(raw))
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
        self.leases.heartbeat(self.name, self.token, self.lease_seconds)
        outcome = self.delivery.send(chunk)
        self.report.batches += 1
        kind = type(outcome).__name__
        self.report.outcomes[kind] = self.report.outcomes.get(kind, 0) + 1
