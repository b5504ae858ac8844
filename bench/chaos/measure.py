"""What a scenario measured: the backlog over time, copies at the vendor, dead letters, stalls.

- ``delivered``: distinct accepted ids the vendor took at least once (stored, or for the
  Gravity Conversions API, which deduplicates, also answered ``duplicate``).
- ``duplicated``: every copy of an id beyond the first that reached the vendor and was taken.
- ``dead_lettered``: distinct accepted ids found in the dead-letter store.
- ``lost``: accepted ids neither delivered nor dead-lettered.
- ``stall_s``: per destination, the longest stretch during which the relay had a backlog
  (unread, in flight or waiting events) and no request arrived at the vendor; the largest over
  the scenario's destinations.
- ambiguous requests: taken by the vendor but answered after the relay's request timeout, or in
  flight (or answered within a moment) when the scenario killed a worker or Redis.  The relay
  cannot know their outcome, so re-sending their events is the at-least-once contract; copies of
  their ids are counted as ``duplicated_ambiguous``, the rest as ``duplicated_unexplained``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Backlog samples per second.
SAMPLE_SECONDS = 0.1
#: A request that finished this soon before a worker was killed is ambiguous too: the worker may
#: not have written its outcome yet.
KILL_MARGIN_SECONDS = 0.5
#: Redis kills: also this long before the kill (``appendfsync everysec`` may lose the last second).
REDIS_MARGIN_SECONDS = 1.5
#: Requests listed in a destination's timeline.
TIMELINE_LIMIT = 3000


class Sampler(threading.Thread):
    """The backlog of each destination, ``SAMPLE_SECONDS`` apart (None while Redis is away)."""

    def __init__(self, read: Callable[[], dict[str, int]], also: Callable[[], None] | None = None) -> None:
        super().__init__(name="chaos-sampler", daemon=True)
        self.read = read
        self.also = also
        self.samples: list[tuple[float, dict[str, int] | None]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            now = time.time()
            try:
                value: dict[str, int] | None = self.read()
            except Exception:  # Redis killed, restarting, or refusing: the backlog is unknown
                value = None
            self.samples.append((now, value))
            if self.also is not None:
                try:
                    self.also()
                except Exception:
                    pass
            self.stop_event.wait(max(0.0, SAMPLE_SECONDS - (time.time() - now)))

    def latest(self) -> dict[str, int] | None:
        return self.samples[-1][1] if self.samples else None

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


def backlog_intervals(samples: list[tuple[float, dict[str, int] | None]], dest: str) -> list[tuple[float, float]]:
    """Stretches with a backlog for ``dest``; an unknown sample (Redis away) keeps the last state."""
    intervals: list[tuple[float, float]] = []
    start: float | None = None
    busy = False
    for at, value in samples:
        if value is not None:
            busy = value.get(dest, 0) > 0
        if busy and start is None:
            start = at
        elif not busy and start is not None:
            intervals.append((start, at))
            start = None
    if start is not None and samples:
        intervals.append((start, samples[-1][0]))
    return intervals


def longest_stall(intervals: list[tuple[float, float]], arrivals: list[float]) -> tuple[float, float | None]:
    """The longest gap between requests (or an interval's edge) inside the backlog intervals,
    and when it began."""
    arrivals = sorted(arrivals)
    best, best_at = 0.0, None
    i = 0
    for start, end in intervals:
        while i < len(arrivals) and arrivals[i] <= start:
            i += 1
        points = [start]
        j = i
        while j < len(arrivals) and arrivals[j] < end:
            points.append(arrivals[j])
            j += 1
        points.append(end)
        for a, b in zip(points, points[1:]):
            if b - a > best:
                best, best_at = b - a, a
    return best, best_at


def part_id(raw: str) -> str | None:
    """The chaos id of a dead-lettered part: a vendor payload or a stored canonical event."""
    try:
        part = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(part, dict):
        return None
    data = part.get("data")
    if isinstance(data, dict) and data.get("order_id"):
        return str(data["order_id"])
    for pair in part.get("nameValues") or []:
        if isinstance(pair, dict) and pair.get("name") in ("orderId", "OrderId"):
            return str(pair.get("value"))
    if part.get("event_id"):
        return str(part["event_id"])
    return None


@dataclass
class Windows:
    """When the scenario killed something: worker kills (instants), Redis outages (spans)."""

    kills: list[float] = field(default_factory=list)
    redis_down: list[tuple[float, float]] = field(default_factory=list)

    def ambiguous(self, arrived: float, finished: float, timeout: float) -> str | None:
        if finished - arrived > timeout:
            return "answered_after_timeout"
        if any(arrived <= k <= finished + KILL_MARGIN_SECONDS for k in self.kills):
            return "in_flight_at_worker_kill"
        for down, up in self.redis_down:
            if arrived <= up and finished + REDIS_MARGIN_SECONDS >= down:
                return "answered_while_redis_down"
        return None


@dataclass
class DestinationFigures:
    accepted: int = 0
    refused: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    duplicated: int = 0
    duplicated_ambiguous: int = 0
    duplicated_unexplained: int = 0
    lost: int = 0
    stall_s: float = 0.0
    stall_at_s: float | None = None
    requests: int = 0
    ambiguous_requests: dict[str, int] = field(default_factory=dict)
    delivered_not_accepted: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    lost_sample: list[str] = field(default_factory=list)
    #: Per request: [arrived (s after the start), seconds taken, status, ids carried, ids taken].
    timeline: list[list[Any]] = field(default_factory=list)


def destination_figures(
    accepted: set[str],
    refused: int,
    log: list[list[Any]],
    letters: Iterable[Any],
    samples: list[tuple[float, dict[str, int] | None]],
    dest: str,
    timeout: float,
    windows: Windows,
    started: float,
) -> DestinationFigures:
    """Figures of one destination from the vendor's request log and the dead-letter store."""
    figures = DestinationFigures(accepted=len(accepted), refused=refused, requests=len(log))
    copies: Counter[str] = Counter()
    ambiguous_ids: set[str] = set()
    for arrived, finished, status, _kind, ids, taken in log:
        if len(figures.timeline) < TIMELINE_LIMIT:
            at, took = round(arrived - started, 2), round(finished - arrived, 2)
            figures.timeline.append([at, took, status, len(ids), len(taken)])
        copies.update(taken)
        why = windows.ambiguous(arrived, finished, timeout) if taken else None
        if why:
            figures.ambiguous_requests[why] = figures.ambiguous_requests.get(why, 0) + 1
            ambiguous_ids.update(taken)
    delivered = {i for i in copies if i in accepted}
    figures.delivered = len(delivered)
    figures.delivered_not_accepted = len(set(copies) - accepted)
    for event_id, count in copies.items():
        extra = count - 1
        if extra > 0:
            figures.duplicated += extra
            if event_id in ambiguous_ids:
                figures.duplicated_ambiguous += extra
            else:
                figures.duplicated_unexplained += extra
    dead: set[str] = set()
    for letter in letters:
        figures.dead_letter_reasons[letter.reason] = figures.dead_letter_reasons.get(letter.reason, 0) + len(
            letter.parts
        )
        dead.update(i for i in (part_id(p) for p in letter.parts) if i)
    figures.dead_lettered = len(dead & accepted)
    missing = accepted - delivered - dead
    figures.lost = len(missing)
    figures.lost_sample = sorted(missing)[:10]
    stall, at = longest_stall(backlog_intervals(samples, dest), [entry[0] for entry in log])
    figures.stall_s = round(stall, 2)
    figures.stall_at_s = None if at is None else round(at - started, 1)
    return figures
