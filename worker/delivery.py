"""The delivery engine: send a chunk, then record what became of every part, atomically.

This is the one place that decides between done, retry later, split and dead-letter, for every
vendor.  Each decision is written in a single Redis transaction together with the release of the
stored records the parts came from, so a crash at any point leaves each event either still
stored where it was or recorded in its new place, never lost.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from worker import stats
from worker.backoff import retry_delay
from worker.batching import Chunk
from worker.deadletter import DeadLetter
from worker.outcomes import Accepted, Outcome, Rejected, RetryLater, TooLarge
from worker.waiting import WaitingBatch

if TYPE_CHECKING:
    import redis

    from worker.runtime import DestinationRuntime, Runtime

log = logging.getLogger("conversion_relay.delivery")

STREAM = "s:"
BATCH = "b:"
#: Statuses that refuse a request's content (not its credentials): splitting may isolate the cause.
SPLITTABLE_STATUSES = frozenset({400, 422})


class Ledger:
    """Stored records a drain holds, and how many of their parts are still unresolved."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def hold(self, origin: str, parts: int) -> None:
        self._open[origin] = self._open.get(origin, 0) + parts

    def settle(self, origins: list[str]) -> list[str]:
        """Count one part resolved per origin; return the records now fully resolved."""
        done = []
        for origin in origins:
            left = self._open[origin] - 1
            if left:
                self._open[origin] = left
            else:
                del self._open[origin]
                done.append(origin)
        return done


class Delivery:
    def __init__(
        self,
        rt: Runtime,
        dest: DestinationRuntime,
        ledger: Ledger,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rt = rt
        self.sleep = sleep
        self.dest = dest
        self.name = dest.settings.name
        self.ledger = ledger
        self.clock = clock
        self.rand = rand
        #: Set when the destination must back off until this time.
        self.paused_until: float | None = None

    def send(self, chunk: Chunk) -> Outcome:
        """One attempt at the vendor for ``chunk``; every part ends up resolved or stored."""
        adapter = self.dest.adapter
        request = adapter.request_for(chunk.group, adapter.body_for(chunk.group, chunk.parts))
        self.throttle()
        response = self.dest.transport.send(request)
        if isinstance(response, RetryLater):
            self.record(chunk, response, sent=False)
            return response
        outcome = adapter.interpret(response.status, response.headers, response.body, chunk.parts)
        if self._splits(outcome) and len(chunk.parts) > 1:
            log.info("%s: %d events refused together (%s); splitting", self.name, len(chunk.parts), outcome)
            self._commit(lambda pipe, now: stats.count(pipe, self.rt.keys, self.name, split=1, requests=1))
            for half in chunk.split():
                self.send(half)
            return outcome
        self.record(chunk, outcome, sent=True)
        return outcome

    def _splits(self, outcome: Outcome) -> bool:
        """Too large, or refused whole by a vendor that judges requests whole: halves may pass
        (and an event the vendor refuses ends up alone, dead-lettered without its neighbours)."""
        if isinstance(outcome, TooLarge):
            return True
        return (
            isinstance(outcome, Rejected)
            and self.dest.adapter.splits_rejected_batches
            and outcome.status in SPLITTABLE_STATUSES
        )

    def throttle(self) -> None:
        """Wait for the destination's shared rate limit, renewing nothing: waits are short."""
        while (wait := self.dest.limiter.acquire()) > 0:
            self.sleep(min(wait, 1.0))

    def record(self, chunk: Chunk, outcome: Outcome, *, sent: bool) -> None:
        """Write what ``outcome`` means for every part of ``chunk`` and release its records."""

        def write(pipe: redis.client.Pipeline, now: float) -> None:
            if sent:
                stats.count(pipe, self.rt.keys, self.name, requests=1)
            if isinstance(outcome, Accepted):
                self._accepted(pipe, now, chunk, outcome)
            elif isinstance(outcome, RetryLater):
                self._retry(pipe, now, chunk, outcome)
            elif isinstance(outcome, TooLarge):
                self._dead(pipe, now, chunk, chunk.parts, "too_large", outcome.status, outcome.excerpt)
            else:
                self._dead(pipe, now, chunk, chunk.parts, outcome.reason, outcome.status, outcome.excerpt)

        self._commit(write, settle=chunk.origins)

    def dead_letter(self, chunk: Chunk, reason: str, excerpt: str) -> None:
        """Dead-letter parts that were never sent (too large alone, unmappable, poison)."""
        self.record(chunk, Rejected(reason=reason, excerpt=excerpt), sent=False)

    def skip(self, origin: str) -> None:
        """Release a record the vendor cannot express; it counts as skipped, never as an error."""
        self._commit(lambda pipe, now: stats.count(pipe, self.rt.keys, self.name, skipped=1), release=[origin])

    def defer(self, chunk: Chunk, until: float) -> None:
        """Park parts not yet sent while the destination backs off; they wait, attempts unchanged."""

        def write(pipe: redis.client.Pipeline, now: float) -> None:
            batch = WaitingBatch(
                destination=self.name,
                group=chunk.group,
                parts=[p.decode() for p in chunk.parts],
                attempts=chunk.attempts,
                first_failure_at=chunk.first_failure_at or now,
                last_failure_at=now,
                next_attempt_at=until,
                last_reason="deferred while the destination backs off",
            )
            self.rt.waiting.park(pipe, batch)
            stats.count(pipe, self.rt.keys, self.name, deferred=len(chunk.parts))

        self._commit(write, settle=chunk.origins)

    def _accepted(self, pipe: redis.client.Pipeline, now: float, chunk: Chunk, outcome: Accepted) -> None:
        tally = Counter(outcome.statuses)
        stats.count(
            pipe,
            self.rt.keys,
            self.name,
            delivered=tally["ok"],
            duplicate=tally["duplicate"],
            test_ok=tally["test_ok"],
            skipped=tally["skipped"],
        )
        if outcome.errors:
            indexes = sorted(outcome.errors)
            failed = [chunk.parts[i] for i in indexes]
            errors = {str(n): outcome.errors[i] for n, i in enumerate(indexes)}
            self._dead(pipe, now, chunk, failed, "vendor_rejected_event", 200, "", errors=errors)
            log.warning("%s: vendor refused %d of %d events", self.name, len(failed), len(chunk.parts))

    def _retry(self, pipe: redis.client.Pipeline, now: float, chunk: Chunk, outcome: RetryLater) -> None:
        cfg = self.rt.settings
        attempts = chunk.attempts + 1
        first = chunk.first_failure_at or now
        horizon_end = first + cfg.retry_horizon_seconds
        exhausted = now >= horizon_end or 0 < cfg.max_attempts <= attempts
        if exhausted:
            excerpt = f"{outcome.reason}: {outcome.excerpt}".strip(": ")
            self._dead(
                pipe,
                now,
                chunk,
                chunk.parts,
                "retries_exhausted",
                outcome.status,
                excerpt,
                attempts=attempts,
                first=first,
            )
            return
        delay = retry_delay(
            attempts,
            outcome.retry_after_seconds,
            base_seconds=cfg.backoff_base_seconds,
            cap_seconds=cfg.backoff_cap_seconds,
            max_retry_after_seconds=cfg.max_retry_after_seconds,
            rand=self.rand,
        )
        due = min(now + delay, horizon_end)
        batch = WaitingBatch(
            destination=self.name,
            group=chunk.group,
            parts=[p.decode() for p in chunk.parts],
            attempts=attempts,
            first_failure_at=first,
            last_failure_at=now,
            next_attempt_at=due,
            last_status=outcome.status,
            last_reason=outcome.reason,
            last_excerpt=outcome.excerpt,
        )
        self.rt.waiting.park(pipe, batch)
        stats.count(pipe, self.rt.keys, self.name, retried=len(chunk.parts))
        self.pause(pipe, due, now)
        log.warning(
            "%s: %s (status %s); %d events wait %.1f s (attempt %d)",
            self.name,
            outcome.reason,
            outcome.status,
            len(chunk.parts),
            due - now,
            attempts,
        )

    def pause(self, pipe: redis.client.Pipeline, until: float, now: float) -> None:
        """Back the whole destination off: the next batch would meet the same trouble."""
        self.paused_until = max(self.paused_until or 0.0, until)
        wait_ms = int((until - now) * 1000)
        if wait_ms > 0:
            pipe.set(self.rt.keys.pause(self.name), str(until), px=wait_ms)

    def _dead(
        self,
        pipe: redis.client.Pipeline,
        now: float,
        chunk: Chunk,
        parts: list[bytes],
        reason: str,
        status: int | None,
        excerpt: str,
        *,
        errors: dict[str, str] | None = None,
        attempts: int | None = None,
        first: float | None = None,
    ) -> None:
        letter = DeadLetter(
            destination=self.name,
            vendor=self.dest.settings.vendor,
            group=chunk.group,
            parts=[p.decode() for p in parts],
            reason=reason,
            status=status,
            excerpt=excerpt,
            attempts=attempts if attempts is not None else chunk.attempts + 1,
            first_failed_at=first or chunk.first_failure_at or now,
            last_failed_at=now,
            errors=errors or {},
        )
        self.rt.dead_letters.add(pipe, letter)
        stats.count(pipe, self.rt.keys, self.name, dead_lettered=len(parts))
        if reason != "vendor_rejected_event":
            log.error(
                "%s: %d events dead-lettered (%s, status %s) as %s", self.name, len(parts), reason, status, letter.id
            )

    def _commit(
        self,
        write: Callable[[redis.client.Pipeline, float], None],
        *,
        settle: Sequence[str] = (),
        release: Sequence[str] = (),
    ) -> None:
        """Run ``write`` and release finished records in one transaction.

        ``settle`` names the origin of each part just resolved (a record is released when its
        last part is); ``release`` names records to release outright.
        """
        finished = self.ledger.settle(list(settle)) + list(release)
        pipe = self.rt.redis.pipeline(transaction=True)
        write(pipe, self.clock())
        self.dest.stream.ack(pipe, [o[len(STREAM) :] for o in finished if o.startswith(STREAM)])
        for origin in finished:
            if origin.startswith(BATCH):
                self.rt.waiting.remove(pipe, self.name, origin[len(BATCH) :])
        pipe.execute()
