"""``relay.drain``: deliver what is waiting in one partition of a destination.

Sent by the scheduler (see :mod:`conversion_relay.engine.scheduler`) to the destination's own queue, never by
producers.  Its arguments are the destination name, the lease token the scheduler took and the
partition it belongs to.
"""

from __future__ import annotations

from conversion_relay.config.settings import drain_time_limit
from conversion_relay.engine.drain import Drainer
from conversion_relay.engine.runtime import runtime
from conversion_relay.worker.app import app


@app.task(name="relay.drain", acks_late=True, ignore_result=True, time_limit=drain_time_limit(app.relay_settings))
def drain(destination: str, token: str, slot: int = 0) -> dict[str, object]:
    """Drain partition ``slot`` of ``destination`` while holding its lease ``token``."""
    return Drainer(runtime(app.relay_settings), destination, token, slot).run().as_dict()
