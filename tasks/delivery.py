"""``relay.drain``: deliver what is waiting in one partition of a destination.

Sent by the scheduler (see :mod:`worker.scheduler`) to the destination's own queue, never by
producers.  Its arguments are the destination name, the lease token the scheduler took and the
partition it belongs to.
"""

from __future__ import annotations

from worker.app import app
from worker.drain import Drainer
from worker.runtime import runtime
from worker.settings import drain_hard_limit


@app.task(
    name="relay.drain", acks_late=True, ignore_result=True, time_limit=int(drain_hard_limit(app.relay_settings)) + 1
)
def drain(destination: str, token: str, slot: int = 0) -> dict[str, object]:
    """Drain partition ``slot`` of ``destination`` while holding its lease ``token``."""
    return Drainer(runtime(app.relay_settings), destination, token, slot).run().as_dict()


def start_drain(destination: str, token: str, slot: int) -> None:
    drain.apply_async(args=[destination, token, slot], queue=app.relay_settings.destination(destination).queue)
