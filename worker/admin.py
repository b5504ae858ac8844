"""Operations on the dead-letter store and the state of destinations.

Shared by the ``relay.admin`` Celery task and the ``conversion-relay`` command line, so both do
exactly the same thing.  Replay and purge are dry runs unless ``dry_run=False``: they report
what they would touch first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from worker import stats
from worker.deadletter import DeadLetter, DeadLetterStore, Selection
from worker.keys import Keys
from worker.stream import destination_backlog
from worker.waiting import WaitingBatches

if TYPE_CHECKING:
    import redis

    from worker.settings import Settings

#: Entries listed in a report; counts cover everything.
LISTED = 50


class Admin:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.letters = DeadLetterStore(client, self.keys)
        self.waiting = WaitingBatches(client, self.keys)

    def list(self, selection: Selection) -> list[dict[str, Any]]:
        return [letter.summary() for letter in self.letters.select(selection)]

    def show(self, entry_id: str) -> dict[str, Any] | None:
        letter = self.letters.get(entry_id)
        return letter.to_json() if letter else None

    def export(self, selection: Selection, out: TextIO) -> int:
        """Write matching entries as JSON lines; return how many."""
        written = 0
        for letter in self.letters.select(selection):
            out.write(json.dumps(letter.to_json(), ensure_ascii=False) + "\n")
            written += 1
        return written

    def replay(self, selection: Selection, *, dry_run: bool = True) -> dict[str, Any]:
        """Send matching entries again: each goes back to its destination, due now -- vendor
        payloads as a waiting batch, stored events that were never mapped to the stream.

        Entries that fail again return to the store with a new id.
        """
        return self._apply(
            selection,
            dry_run,
            lambda letter, now: self.letters.replay(letter, now, self._partitions(letter)) is not None,
        )

    def _partitions(self, letter: DeadLetter) -> int:
        dest = self.settings.destinations.get(letter.destination)
        return dest.partitions if dest else 1

    def purge(self, selection: Selection, *, dry_run: bool = True) -> dict[str, Any]:
        return self._apply(selection, dry_run, lambda letter, now: self.letters.purge(letter))

    def _apply(self, selection: Selection, dry_run: bool, act: Any) -> dict[str, Any]:
        now = time.time()
        entries = events = done = 0
        listed: list[str] = []
        for letter in self._matching(selection):
            entries += 1
            events += len(letter.parts)
            if len(listed) < LISTED:
                listed.append(letter.id)
            if not dry_run and act(letter, now):
                done += 1
        return {"dry_run": dry_run, "entries": entries, "events": events, "done": done, "ids": listed}

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
                )
            )

    def _destinations(self, selection: Selection) -> list[str | None]:
        if selection.destination:
            self.settings.destination(selection.destination)
        return [selection.destination]

    def status(self, waiting_limit: int = 20) -> dict[str, Any]:
        """Per destination: counters, backlog, back-off, the run of transient failures (the
        breaker), and the waiting batches with their attempts and next attempt time."""
        report: dict[str, Any] = {}
        for dest in self.settings.destinations.values():
            paused = self.redis.get(self.keys.pause(dest.name))
            run = self.redis.hgetall(self.keys.breaker(dest.name))
            report[dest.name] = {
                "vendor": dest.vendor,
                "enabled": dest.enabled,
                "counters": stats.read(self.redis, self.keys, dest.name),
                "backlog": destination_backlog(self.redis, self.keys, dest.name, dest.partitions),
                "backing_off_until": float(paused) if paused else None,
                "failing": {"failures": int(run[b"failures"]), "since": float(run.get(b"since") or 0)}
                if run.get(b"failures")
                else None,
                "waiting_batches": self.waiting.count(dest.name),
                "waiting_events": stats.waiting_events(self.redis, self.keys, dest.name),
                "waiting": [b.summary() for b in self.waiting.list(dest.name, waiting_limit)],
                "dead_letters": self.letters.count(dest.name),
            }
        return report
