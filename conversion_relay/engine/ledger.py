"""Which stored records a drain holds, and how many of each one's parts are still unresolved.

A part sent to a vendor comes from a stored record, its *origin*: a stream entry
(``s:<entry id>``) or a waiting batch (``b:<batch id>``).  A record is released -- the entry
acknowledged, the batch removed -- in the transaction that settles its last part, never before:
that is what keeps a crash from losing the parts still open.
"""

from __future__ import annotations

#: Origin prefixes: a stream entry, a waiting batch.
STREAM = "s:"
BATCH = "b:"


class Ledger:
    """Stored records a drain holds, and how many of their parts are still unresolved."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._size: dict[str, int] = {}

    def hold(self, origin: str, parts: int) -> None:
        self._open[origin] = self._open.get(origin, 0) + parts
        self._size[origin] = self._size.get(origin, 0) + parts

    def size(self, origin: str) -> int:
        """How many parts a record held in all (a waiting batch's events, say)."""
        return self._size.get(origin, 0)

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

    def forget(self, origin: str) -> None:
        self._size.pop(origin, None)
