"""Operations on the dead-letter store, erasure, and the state of destinations.

Shared by the ``relay.admin`` Celery task and the ``conversion-relay`` command line, so both do
exactly the same thing -- and check the same things: a :class:`Selection` refuses nonsense
values, and the destructive operations (replay, purge, erase) refuse to touch everything unless
told so explicitly (``Selection(everything=True)``).  They are dry runs unless
``dry_run=False``: they report what they would touch first.  Each writes one audit line
(logger ``conversion_relay.audit``: WARNING when it changed something, INFO for a dry run)
saying what, how many, which destination or filters, and ``origin`` -- who asked -- never an
event or a personal value.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from conversion_relay.ops.erase import PLACES, Eraser, person
from conversion_relay.store import stats
from conversion_relay.store.deadletter import DeadLetter, DeadLetterStore
from conversion_relay.store.keys import Keys
from conversion_relay.store.selection import InvalidSelection, Selection, check_origin
from conversion_relay.store.stream import destination_backlog
from conversion_relay.store.waiting import WaitingBatches

if TYPE_CHECKING:
    import redis

    from conversion_relay.config.settings import Settings

__all__ = ["LISTED", "RESULT_SECONDS", "Admin", "InvalidSelection", "Selection"]

audit = logging.getLogger("conversion_relay.audit")

#: Told how many more entries an operation handled, for a progress bar (conversion_relay/cli/progress.py).
Progress = Callable[[int], None]

#: Entries listed in a report; counts cover everything.
LISTED = 50
#: How long the result backend keeps a ``relay.admin`` result: long enough for the caller
#: waiting on it, short enough that an entry shown with its events does not linger.
RESULT_SECONDS = 60


class Admin:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.letters = DeadLetterStore(client, self.keys)
        self.waiting = WaitingBatches(client, self.keys)

    def list(self, selection: Selection) -> list[dict[str, Any]]:
        return [letter.summary() for letter in self.letters.select(selection)]

    def show(self, entry_id: str, *, events: bool = True) -> dict[str, Any] | None:
        """One entry with its events decoded, or (``events=False``) its :meth:`DeadLetter.brief`."""
        letter = self.letters.get(entry_id)
        if letter is None:
            return None
        return letter.to_json() if events else letter.brief()

    def export(self, selection: Selection, out: TextIO, *, progress: Progress | None = None) -> int:
        """Write matching entries as JSON lines; return how many.  ``progress`` is told of each one written."""
        written = 0
        for letter in self.letters.select(selection):
            out.write(json.dumps(letter.to_json(), ensure_ascii=False) + "\n")
            written += 1
            if progress:
                progress(1)
        return written

    def replay(
        self, selection: Selection, *, dry_run: bool = True, origin: str = "api", progress: Progress | None = None
    ) -> dict[str, Any]:
        """Send matching entries again: each goes back to its destination, due now -- vendor
        payloads as a waiting batch, stored events that were never mapped to the stream.

        Entries that fail again return to the store with a new id.  ``progress`` is told of
        each entry handled (a person at a terminal watches a long replay).

        Raises:
            InvalidSelection: no ids, no filter and not ``everything``; or a bad ``origin``.
        """
        return self._apply(
            "replay",
            selection,
            dry_run,
            origin,
            lambda letter, now: self.letters.replay(letter, now, self._partitions(letter)) is not None,
            progress,
        )

    def _partitions(self, letter: DeadLetter) -> int:
        dest = self.settings.destinations.get(letter.destination)
        return dest.partitions if dest else 1

    def purge(
        self, selection: Selection, *, dry_run: bool = True, origin: str = "api", progress: Progress | None = None
    ) -> dict[str, Any]:
        """Delete matching entries for good; ``progress`` is told of each entry handled.

        Raises:
            InvalidSelection: no ids, no filter and not ``everything``; or a bad ``origin``.
        """
        return self._apply(
            "purge", selection, dry_run, origin, lambda letter, now: self.letters.purge(letter), progress
        )

    def _apply(
        self, action: str, selection: Selection, dry_run: bool, origin: str, act: Any, progress: Progress | None
    ) -> dict[str, Any]:
        origin = check_origin(origin)
        selection.require_target(action)
        now = time.time()
        entries = events = done = 0
        listed: list[str] = []
        destinations: dict[str, int] = {}
        for letter in self._matching(selection):
            entries += 1
            events += len(letter.parts)
            if len(listed) < LISTED:
                listed.append(letter.id)
            if not dry_run and act(letter, now):
                done += 1
                destinations[letter.destination] = destinations.get(letter.destination, 0) + 1
            if progress:
                progress(1)
        if dry_run:
            audit.info(
                "%s (dry run) would touch %d dead letters (%d events); selection: %s; origin: %s",
                action, entries, events, selection.describe(), origin,
            )  # fmt: skip
        else:
            audit.warning(
                "%s: %d of %d dead letters (%d events) done; per destination: %s; selection: %s; origin: %s",
                action, done, entries, events, _per_destination(destinations), selection.describe(), origin,
            )  # fmt: skip
        return {"dry_run": dry_run, "entries": entries, "events": events, "done": done, "ids": listed}

    def erase(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        external_id: str | None = None,
        dry_run: bool = True,
        origin: str = "api",
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Find (and unless ``dry_run``, remove) every stored event of one person -- from every
        partition's stream, waiting batches and dead letters -- for an erasure request.

        ``email`` and ``phone`` are hashed as the producer hashes them (phones read in
        ``relay.default_phone_region``; a SHA-256 digest passes unchanged), ``external_id`` is
        compared as given; an event matching any of them is the person's.  Returns what was
        found and removed per place (``stream``, ``waiting``, ``dead_letters``) and destination,
        in events (vendor parts, for batches and dead letters), and how many drains that held
        the person's events were stopped; ``progress`` is told of each page of stored entries
        searched.  What is guaranteed while drains run: see
        :mod:`conversion_relay.ops.erase`.

        Raises:
            InvalidSelection: no identifier, one that cannot be read, or a bad ``origin``.
        """
        origin = check_origin(origin)
        who = person(email=email, phone=phone, external_id=external_id, region=self.settings.default_phone_region)
        report = Eraser(self.settings, self.redis, self.keys).erase(who, dry_run=dry_run, progress=progress)
        by = "+".join(who.kinds)
        counts = "; ".join(f"{place} {_per_destination(report['found'][place])}" for place in PLACES)
        if dry_run:
            audit.info(
                "erase (dry run) of one person (by %s) would remove %d events: %s; origin: %s",
                by, report["events_found"], counts, origin,
            )  # fmt: skip
        else:
            removed = "; ".join(f"{place} {_per_destination(report['removed'][place])}" for place in PLACES)
            audit.warning(
                "erase of one person (by %s): removed %d of %d events found: %s; drains stopped: %d; origin: %s",
                by, report["events_removed"], report["events_found"], removed, report["drains_stopped"], origin,
            )  # fmt: skip
        return report

    def _matching(self, selection: Selection) -> Iterator[Any]:
        for destination in self._destinations(selection):
            yield from self.letters.select(
                Selection(
                    ids=selection.ids,
                    destination=destination,
                    reason=selection.reason,
                    since=selection.since,
                    until=selection.until,
                    limit=selection.limit,
                    everything=selection.everything,
                )
            )

    def _destinations(self, selection: Selection) -> list[str | None]:
        if selection.destination:
            self.settings.destination(selection.destination)
        return [selection.destination]

    def status(self, waiting_limit: int = 20) -> dict[str, Any]:
        """Per destination: counters, backlog, back-off, the run of transient failures (the
        breaker), the waiting batches with their attempts and next attempt time, the age of the
        oldest undelivered event (the lag) and the last success."""
        report: dict[str, Any] = {}
        now = redis_time(self.redis)
        for dest in self.settings.destinations.values():
            paused = self.redis.get(self.keys.pause(dest.name))
            run = self.redis.hgetall(self.keys.breaker(dest.name))
            report[dest.name] = {
                "vendor": dest.vendor,
                "enabled": dest.enabled,
                "counters": stats.read(self.redis, self.keys, dest.name),
                "skipped_by_reason": stats.skips(self.redis, self.keys, dest.name),
                "backlog": destination_backlog(self.redis, self.keys, dest.name, dest.partitions),
                "backing_off_until": float(paused) if paused else None,
                "failing": {"failures": int(run[b"failures"]), "since": float(run.get(b"since") or 0)}
                if run.get(b"failures")
                else None,
                "waiting_batches": self.waiting.count(dest.name),
                "waiting_events": stats.waiting_events(self.redis, self.keys, dest.name),
                "waiting": [b.summary() for b in self.waiting.list(dest.name, waiting_limit)],
                "dead_letters": self.letters.count(dest.name),
                "oldest_undelivered_age_seconds": oldest_undelivered_age(
                    self.redis, self.keys, self.settings, dest.name, now
                ),
                "last_success": stats.observed(self.redis, self.keys, dest.name)[stats.LAST_SUCCESS],
            }
        return report


def _per_destination(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


#: Waiting batches looked at for the age of the oldest one.
OLDEST_WAITING_SCAN = 1000


def redis_time(client: redis.Redis) -> float:
    """Redis's clock: stream ids carry it, so ages are measured against it, not this host's."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def oldest_undelivered_age(client: redis.Redis, keys: Keys, settings: Settings, destination: str, now: float) -> float:
    """Seconds since the oldest event of ``destination`` not yet resolved was stored, 0 if none.

    A stream entry stays until its outcome is recorded, and its id is the Redis time it was
    added, so the first entry of each partition is its oldest.  A waiting batch keeps when it
    first failed, not when its events arrived: its age is a lower bound.
    """
    partitions = settings.destination(destination).partitions
    pipe = client.pipeline(transaction=False)
    for k in range(partitions):
        pipe.xrange(keys.stream(destination, k), count=1)
    stored = []
    for entries in pipe.execute():
        if entries:
            stored.append(int(entries[0][0].split(b"-")[0]) / 1000)
    ids = client.zrange(keys.retry(destination), 0, OLDEST_WAITING_SCAN - 1)
    if ids:
        pipe = client.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hget(keys.batch(destination, batch_id.decode()), "first_failure_at")
        stored += [float(value) for value in pipe.execute() if value]
    return max(0.0, now - min(stored)) if stored else 0.0
