"""``relay.drain``: deliver what is waiting for one destination.

Sent by the scheduler (see :mod:`worker.scheduler`) to the destination's own queue, never by
producers.  Its arguments are the destination name, the lease token the scheduler took and the
drain slot it belongs to.
"""

from __future__ import annotations

from worker.app import app
from worker.drain import Drainer
from worker.runtime import runtime

_settings = app.relay_settings
# The budget bounds the task; the limit is a backstop for a vendor that never answers.
_HARD_LIMIT = int(
    _settings.drain_budget_seconds
    + 3 * max((d.request_timeout_seconds for d in _settings.destinations.values()), default=10.0)
    + 30
)


@app.task(name="relay.drain", acks_late=True, ignore_result=True, time_limit=_HARD_LIMIT)
def drain(destination: str, token: str, slot: int = 0) -> dict[str, object]:
    """Drain ``destination`` while holding the lease ``token`` of drain slot ``slot``."""
    return Drainer(runtime(app.relay_settings), destination, token, slot).run().as_dict()


def start_drain(destination: str, token: str, slot: int) -> None:
    drain.apply_async(args=[destination, token, slot], queue=app.relay_settings.destination(destination).queue)
