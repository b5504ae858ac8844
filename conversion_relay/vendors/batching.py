"""Gathering vendor parts into requests that respect every limit at once.

A :class:`Batcher` keeps one open chunk per group.  A chunk leaves when one more part would
break the count or byte limit, when its oldest part reaches the flush deadline, or when too many
parts or bytes are held across groups (so a vendor with a group per user cannot pile up memory:
the oldest chunks leave first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Chunk:
    """Parts bound for one request, and where each came from.

    ``origins[i]`` names the stored record part ``i`` was read from (``s:<stream id>`` or
    ``b:<batch id>``); the record is released once all of its parts are resolved.
    ``attempts`` and ``first_failure_at`` carry the retry history of a waiting batch.
    """

    group: str
    parts: list[bytes] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    attempts: int = 0
    first_failure_at: float | None = None
    oldest_enqueued_at: float = 0.0
    size: int = 0

    @property
    def batch_id(self) -> str | None:
        """The waiting batch the parts came from, if they came from one (``b:<id>`` origins)."""
        for origin in self.origins:
            if origin.startswith("b:"):
                return origin[2:]
        return None

    def split(self) -> tuple[Chunk, Chunk]:
        middle = len(self.parts) // 2
        envelope = self.size - sum(map(len, self.parts)) - (len(self.parts) - 1) if self.size else 0
        halves = []
        for lo, hi in ((0, middle), (middle, len(self.parts))):
            parts = self.parts[lo:hi]
            halves.append(
                Chunk(
                    group=self.group,
                    parts=parts,
                    origins=self.origins[lo:hi],
                    attempts=self.attempts,
                    first_failure_at=self.first_failure_at,
                    oldest_enqueued_at=self.oldest_enqueued_at,
                    size=envelope + sum(map(len, parts)) + len(parts) - 1 if self.size else 0,
                )
            )
        return halves[0], halves[1]


class Batcher:
    def __init__(
        self,
        *,
        max_events: int,
        max_bytes: int,
        envelope_size: Callable[[str], int],
        max_held_parts: int | None = None,
        max_held_bytes: int | None = None,
        max_events_for: Callable[[str], int] | None = None,
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._envelope_size = envelope_size
        self._max_events_for = max_events_for or (lambda group: max_events)
        self.max_held_parts = max_held_parts or max(2 * max_events, 1000)
        #: Most bytes of parts held across open chunks (None: only the count limits them).
        self.max_held_bytes = max_held_bytes
        self._open: dict[str, Chunk] = {}
        self.held = 0
        self.held_bytes = 0

    def fits_alone(self, group: str, body: bytes) -> bool:
        """Whether a request holding only this part stays within the byte limit."""
        return self._envelope_size(group) + len(body) <= self.max_bytes

    def add(self, group: str, body: bytes, origin: str, enqueued_at: float) -> list[Chunk]:
        """Hold one part; return the chunks that are full and must leave now."""
        ready: list[Chunk] = []
        chunk = self._open.get(group)
        if chunk is not None and chunk.size + 1 + len(body) > self.max_bytes:
            ready.append(self._close(group))
            chunk = None
        if chunk is None:
            chunk = Chunk(group=group, oldest_enqueued_at=enqueued_at, size=self._envelope_size(group) - 1)
            self._open[group] = chunk
        chunk.parts.append(body)
        chunk.origins.append(origin)
        chunk.size += 1 + len(body)
        chunk.oldest_enqueued_at = min(chunk.oldest_enqueued_at, enqueued_at)
        self.held += 1
        self.held_bytes += len(body)
        if len(chunk.parts) >= self._max_events_for(group):
            ready.append(self._close(group))
        while self.held > self.max_held_parts:
            ready.append(self._close(self._oldest_group()))
        if self.max_held_bytes is not None:
            while self._open and self.held_bytes > self.max_held_bytes:
                ready.append(self._close(self._oldest_group()))
        return ready

    def expired(self, now: float, deadline_seconds: float) -> list[Chunk]:
        """Chunks whose oldest part has waited the flush deadline."""
        due = [g for g, c in self._open.items() if c.oldest_enqueued_at + deadline_seconds <= now]
        return [self._close(group) for group in due]

    def drain(self) -> list[Chunk]:
        return [self._close(group) for group in list(self._open)]

    @property
    def oldest_enqueued_at(self) -> float | None:
        if not self._open:
            return None
        return min(c.oldest_enqueued_at for c in self._open.values())

    def _oldest_group(self) -> str:
        return min(self._open, key=lambda g: self._open[g].oldest_enqueued_at)

    def _close(self, group: str) -> Chunk:
        chunk = self._open.pop(group)
        self.held -= len(chunk.parts)
        self.held_bytes -= sum(map(len, chunk.parts))
        return chunk
