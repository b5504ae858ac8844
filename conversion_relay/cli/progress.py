"""Progress bars for the long commands (replay, purge, export, erase), drawn only for a person at a terminal.

A script that reads a command's output must see exactly what it saw before bars existed, so a
bar appears only when standard output and standard error are both terminals (the bar is drawn
on standard error, beside the output), and never where the caller turned it off: machine
output (``--json``), or output that is itself the data on the terminal (``dlq export`` without
``-o``), where a bar would be mixed into it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

#: Counts already made are passed on at most this often (seconds): a bar is for a person.
REFRESH_SECONDS = 0.2


def at_terminal(out: TextIO | None = None, err: TextIO | None = None) -> bool:
    """Whether a person watches: both streams are terminals (a closed or odd stream is not)."""
    streams = (out or sys.stdout, err or sys.stderr)
    try:
        return all(stream.isatty() for stream in streams)
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(
    description: str, *, total: int | None = None, unit: str = "item", enabled: bool = True
) -> Iterator[Callable[[int], None] | None]:
    """A callback that advances a bar by its argument, or ``None`` when no bar is drawn.

    ``None`` rather than a callback that does nothing, so that the operation called skips the
    work of reporting when nobody watches.  ``total`` (when known) makes the bar show a
    percentage; without it the bar shows the count and the rate.
    """
    if not (enabled and at_terminal()):
        yield None
        return
    from tqdm import tqdm  # only when a bar is drawn: every command imports this module

    bar = tqdm(
        desc=description,
        total=total,
        unit=unit,
        file=sys.stderr,
        mininterval=REFRESH_SECONDS,
        dynamic_ncols=True,
        leave=True,
    )
    try:
        yield bar.update
    finally:
        bar.close()
