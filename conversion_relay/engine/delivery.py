"""The delivery engine: send a chunk, then record what became of every part, atomically.

This is the one place that decides between done, retry later, split and dead-letter, for every
vendor.  Each decision is written in a single fenced transaction (:mod:`conversion_relay.store.fenced`) together
with the release of the stored records the parts came from, so a crash at any point leaves each
event either still stored where it was or recorded in its new place, never lost -- and a drain
that lost its partition records nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from conversion_relay.engine import breaker
from conversion_relay.engine.backoff import retry_delay
from conversion_relay.engine.batchlog import batch_fields, log_batch, outcome_kind
from conversion_relay.engine.ledger import BATCH, STREAM, Ledger
from conversion_relay.errors import LeaseLost
from conversion_relay.masking import without_secrets
from conversion_relay.outcomes import Accepted, DeadLetterReason, Outcome, Reason, Rejected, RetryLater, TooLarge
from conversion_relay.store import stats
from conversion_relay.store.deadletter import DeadLetter
from conversion_relay.store.stats import Counter as Count
from conversion_relay.store.waiting import WaitingBatch
from conversion_relay.vendors.batching import Chunk

if TYPE_CHECKING:
    from conversion_relay.engine.runtime import DestinationRuntime, Runtime
    from conversion_relay.store.lease import DrainLease
    from conversion_relay.store.stream import PartitionStream

log = logging.getLogger("conversion_relay.delivery")

#: Statuses that refuse a request's content (not its credentials): splitting may isolate the cause.
SPLITTABLE_STATUSES = frozenset({400, 422})


class Delivery:
    """Sends chunks for one drain; ``budget_end`` (epoch s) is when the drain hands over."""

    def __init__(
        self,
        rt: Runtime,
        dest: DestinationRuntime,
        stream: PartitionStream,
        lease: DrainLease,
        ledger: Ledger,
        *,
        budget_end: float = float("inf"),
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rt = rt
        self.dest = dest
        self.stream = stream
        self.lease = lease
        self.ledger = ledger
        self.name = dest.settings.name
        self.budget_end = budget_end
        self.clock = clock
        self.rand = rand
        self.sleep = sleep
        self._paused_until: float | None = None
        #: Failures in the run a commit just ended (the vendor answered), else 0.
        self._recovered = 0
        #: Duration (s) and events of the request just sent, for the metrics' histograms and the
        #: batch-outcome log line.
        self._request: tuple[float, int] = (0.0, 0)
        #: Dead letters the last commit wrote, ``{reason: (events, letters)}``, for notices.
        self._dead_tally: dict[str, tuple[int, int]] = {}
        #: The HTTP status of the last response, for the batch-outcome line.
        self._http_status: int | None = None

    @property
    def paused_until(self) -> float | None:
        """Until when the destination backs off, as set here or seen in Redis."""
        seen = self.lease.paused_until
        if seen is None or (self._paused_until or 0.0) > seen:
            return self._paused_until
        return seen

    def send(self, chunk: Chunk) -> Outcome | None:
        """One attempt at the vendor for ``chunk``; every part ends up resolved or stored.

        Past the drain's budget, or while the destination backs off, the chunk is parked as a
        waiting batch instead (``None``): no request leaves after the budget is spent.

        Raises:
            LeaseLost: the drain no longer owns its partition; nothing was sent or written.
        """
        now = self.clock()
        if now >= self.budget_end:
            self.defer(chunk, now, "handed over at the end of a drain's budget")
            return None
        paused = self.paused_until
        if paused and paused > now:
            self.defer(chunk, paused, "deferred while the destination backs off")
            return None
        adapter = self.dest.adapter
        request = adapter.request_for(chunk.group, adapter.body_for(chunk.group, chunk.parts))
        self.throttle()
        if not self.lease.begin_request(self.dest.settings.request_timeout_seconds, chunk.batch_id, self.clock()):
            raise LeaseLost(f"{self.name}: the partition passed to another drain before a request")
        paused = self.paused_until
        if paused and paused > self.clock():
            self.defer(chunk, paused, "deferred while the destination backs off")
            return None
        started = time.monotonic()
        response = self.dest.transport.send(request)
        self._request = (time.monotonic() - started, len(chunk.parts))
        self._http_status = response.status
        if isinstance(response, RetryLater):
            self.record(chunk, response, sent=False)
            return response
        outcome = adapter.interpret(response.status, response.headers, response.body, chunk.parts)
        if self._splits(outcome) and len(chunk.parts) > 1:
            log.info("%s: %d events refused together (%s); splitting", self.name, len(chunk.parts), outcome)
            self._commit(lambda w, now: self._answered(w, Count.SPLIT, Count.REQUESTS))
            self._log_outcome(chunk, outcome, sent=True, kind="split")
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
        """Wait for the destination's shared rate limit (short waits; the heartbeat runs on)."""
        while (wait := self.dest.limiter.acquire()) > 0:
            self.lease.touch(1.0)
            self.sleep(min(wait, 1.0))

    def record(self, chunk: Chunk, outcome: Outcome, *, sent: bool, entry_field: str = "") -> None:
        """Write what ``outcome`` means for every part of ``chunk`` and release its records."""

        def write(w: Any, now: float) -> None:
            if isinstance(outcome, RetryLater):
                if sent:
                    stats.count(w, self.rt.keys, self.name, Count.REQUESTS)
                    stats.observe(w, self.rt.keys, self.name, *self._request)
                self._retry(w, now, chunk, outcome)
                return
            if sent:
                self._answered(w, Count.REQUESTS)
            if isinstance(outcome, Accepted):
                self._accepted(w, now, chunk, outcome)
            elif isinstance(outcome, TooLarge):
                self._dead(w, now, chunk, chunk.parts, DeadLetterReason.TOO_LARGE, outcome.status, outcome.excerpt)
            else:
                self._dead(
                    w, now, chunk, chunk.parts, outcome.reason, outcome.status, outcome.excerpt, entry_field=entry_field
                )

        self._commit(write, settle=chunk.origins)
        self._log_outcome(chunk, outcome, sent=sent)

    def _log_outcome(self, chunk: Chunk, outcome: Outcome, *, sent: bool, kind: str = "") -> None:
        """One line per batch outcome (:mod:`conversion_relay.engine.batchlog`), after its commit."""
        kind = kind or outcome_kind(outcome, self._dead_tally)
        went = sent or isinstance(outcome, RetryLater)
        request_ms, http_status = (int(self._request[0] * 1000), self._http_status) if went else (0, None)
        log_batch(batch_fields(self.name, chunk, outcome, request_ms=request_ms, http_status=http_status, kind=kind))

    def _answered(self, w: Any, *counters: Count) -> None:
        """The vendor answered (any status but a transient one): the breaker closes.  Each of
        ``counters`` counts one."""
        for counter in counters:
            stats.count(w, self.rt.keys, self.name, counter)
        stats.observe(w, self.rt.keys, self.name, *self._request)
        if self.lease.failures:
            breaker.close(w, self.rt.keys.breaker(self.name), self.rt.keys.pause(self.name))
            self._recovered = self.lease.failures

    def dead_letter(self, chunk: Chunk, reason: DeadLetterReason, excerpt: str, *, entry_field: str = "") -> None:
        """Dead-letter parts that were never sent (too large alone, unmappable, poison).

        ``entry_field`` names the stream field (``c`` or ``n``) when the parts are stored
        entries rather than vendor payloads, so that replay maps them again.
        """
        self.record(chunk, Rejected(reason=reason, excerpt=excerpt), sent=False, entry_field=entry_field)

    def skip(self, origin: str, reason: str) -> None:
        """Release a record the vendor cannot take; it counts as skipped by ``reason``, never
        as an error."""
        self._commit(lambda w, now: stats.count_skip(w, self.rt.keys, self.name, reason), release=[origin])

    def defer(self, chunk: Chunk, until: float, reason: str) -> None:
        """Park parts not yet sent as a waiting batch due at ``until``; attempts unchanged."""
        self.defer_many([chunk], until, reason)

    def defer_many(self, chunks: Sequence[Chunk], until: float, reason: str) -> None:
        """Park several chunks in one transaction (a drain handing over what it holds)."""
        if not chunks:
            return

        def write(w: Any, now: float) -> None:
            for chunk in chunks:
                batch = WaitingBatch(
                    destination=self.name,
                    group=chunk.group,
                    parts=[p.decode() for p in chunk.parts],
                    attempts=chunk.attempts,
                    first_failure_at=chunk.first_failure_at or now,
                    last_failure_at=now,
                    next_attempt_at=until,
                    last_reason=reason,
                )
                self.rt.waiting.park(w, batch)
            parked = sum(len(c.parts) for c in chunks)
            stats.count(w, self.rt.keys, self.name, Count.DEFERRED, parked)
            stats.waiting(w, self.rt.keys, self.name, parked)

        self._commit(write, settle=[o for chunk in chunks for o in chunk.origins])

    def _accepted(self, w: Any, now: float, chunk: Chunk, outcome: Accepted) -> None:
        tally = Counter(outcome.statuses)
        stats.succeeded(w, self.rt.keys, self.name, now)
        stats.count_each(
            w,
            self.rt.keys,
            self.name,
            {Count.DELIVERED: tally["ok"], Count.DUPLICATE: tally["duplicate"], Count.TEST_OK: tally["test_ok"]},
        )
        stats.count_skip(w, self.rt.keys, self.name, "vendor_skipped", tally["skipped"])
        if outcome.errors:
            indexes = sorted(outcome.errors)
            failed = [chunk.parts[i] for i in indexes]
            errors = {str(n): outcome.errors[i] for n, i in enumerate(indexes)}
            self._dead(w, now, chunk, failed, DeadLetterReason.VENDOR_REJECTED_EVENT, 200, "", errors=errors)
            log.warning("%s: vendor refused %d of %d events", self.name, len(failed), len(chunk.parts))

    def _retry(self, w: Any, now: float, chunk: Chunk, outcome: RetryLater) -> None:
        cfg = self.rt.settings
        attempts = chunk.attempts + 1
        first = chunk.first_failure_at or now
        horizon_end = first + cfg.retry_horizon_seconds
        breaker.record_failure(w, self.rt.keys.breaker(self.name), now)
        if now >= horizon_end or 0 < cfg.max_attempts <= attempts:
            excerpt = f"{outcome.reason}: {outcome.excerpt}".strip(": ")
            self._dead(
                w,
                now,
                chunk,
                chunk.parts,
                DeadLetterReason.RETRIES_EXHAUSTED,
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
            last_excerpt=self._without_keys(outcome.excerpt),
        )
        self.rt.waiting.park(w, batch)
        stats.count(w, self.rt.keys, self.name, Count.RETRIED, len(chunk.parts))
        stats.waiting(w, self.rt.keys, self.name, len(chunk.parts))
        pause = breaker.probe_delay(
            self.lease.failures + 1,
            base_seconds=cfg.backoff_base_seconds,
            cap_seconds=cfg.probe_interval_seconds,
            rand=self.rand,
        )
        if outcome.retry_after_seconds is not None:
            pause = max(pause, min(outcome.retry_after_seconds, cfg.max_retry_after_seconds))
        self.pause(w, min(now + pause, due), now)
        log.warning(
            "%s: %s (status %s); %d events wait %.1f s (attempt %d), the destination %.1f s",
            self.name,
            outcome.reason,
            outcome.status,
            len(chunk.parts),
            due - now,
            attempts,
            min(pause, due - now),
        )

    def _without_keys(self, text: str) -> str:
        """The vendor's words without any configured API key (see :func:`without_secrets`)."""
        return without_secrets(text, self.rt.settings.secrets)

    def pause(self, w: Any, until: float, now: float) -> None:
        """Back the whole destination off: the next batch would meet the same trouble."""
        self._paused_until = max(self._paused_until or 0.0, until)
        wait_ms = int((until - now) * 1000)
        if wait_ms > 0:
            w.set(self.rt.keys.pause(self.name), repr(until), px=wait_ms)

    def _dead(
        self,
        w: Any,
        now: float,
        chunk: Chunk,
        parts: list[bytes],
        reason: Reason,
        status: int | None,
        excerpt: str,
        *,
        errors: dict[str, str] | None = None,
        attempts: int | None = None,
        first: float | None = None,
        entry_field: str = "",
    ) -> None:
        letter = DeadLetter(
            destination=self.name,
            vendor=self.dest.settings.vendor,
            group=chunk.group,
            parts=[p.decode() for p in parts],
            reason=reason,
            status=status,
            excerpt=self._without_keys(excerpt),
            attempts=attempts if attempts is not None else chunk.attempts + 1,
            first_failed_at=first or chunk.first_failure_at or now,
            last_failed_at=now,
            errors={n: self._without_keys(message) for n, message in (errors or {}).items()},
            entry_field=entry_field,
        )
        self.rt.dead_letters.add(w, letter)
        events, letters = self._dead_tally.get(str(reason), (0, 0))
        self._dead_tally[str(reason)] = (events + len(parts), letters + 1)
        stats.count_dead(w, self.rt.keys, self.name, reason, len(parts))
        if reason != DeadLetterReason.VENDOR_REJECTED_EVENT:
            log.error(
                "%s: %d events dead-lettered (%s, status %s) as %s", self.name, len(parts), reason, status, letter.id
            )

    def _commit(
        self,
        write: Callable[[Any, float], None],
        *,
        settle: Sequence[str] = (),
        release: Sequence[str] = (),
    ) -> None:
        """Run ``write`` and release finished records in one fenced transaction.

        ``settle`` names the origin of each part just resolved (a record is released when its
        last part is); ``release`` names records to release outright.
        """
        finished = self.ledger.settle(list(settle)) + list(release)
        w = self.lease.write()
        self._recovered = 0
        self._dead_tally = {}
        now = self.clock()
        write(w, now)
        self.stream.ack(w, [o[len(STREAM) :] for o in finished if o.startswith(STREAM)])
        for origin in finished:
            if origin.startswith(BATCH):
                self.rt.waiting.remove(w, self.name, origin[len(BATCH) :])
                stats.waiting(w, self.rt.keys, self.name, -self.ledger.size(origin))
        w.execute()
        for origin in finished:
            self.ledger.forget(origin)
        if self._dead_tally:
            self.rt.notices.dead_lettered(self.name, self._dead_tally, now)
        if self._recovered:
            self._after_recovery(self._recovered)

    def _after_recovery(self, failures: int) -> None:
        """The vendor answers again: forget the back-off, and after an outage let every waiting
        batch go now rather than at the end of its own backoff."""
        self.lease.failures = 0
        self._paused_until = None
        self.lease.paused_until = None
        if failures >= breaker.OPEN_AFTER:
            try:
                due = self.rt.waiting.reschedule_all(self.name, self.clock())
            except redis.RedisError as exc:  # full, say: the batches keep their own schedule
                log.warning("%s: could not make waiting batches due (%s)", self.name, type(exc).__name__)
                return
            log.warning("%s: answering again after %d failures; %d waiting batches due now", self.name, failures, due)
