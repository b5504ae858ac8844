"""``relay.admin``: dead-letter operations for operators who drive the relay through Celery.

    task name: relay.admin        queue: relay.admin
    args:      [action]           one of: list, show, replay, purge, status
    kwargs:    selection keys (ids, destination, reason, since, until, limit),
               dry_run (replay/purge, default true), id (show)

Returns a JSON-able dict (the only task with a result, kept an hour).  Replay and purge are dry
runs unless ``dry_run`` is false.  The ``conversion-relay dlq`` command does the same from a
shell, without Celery.
"""

from __future__ import annotations

from typing import Any

from worker.admin import Admin
from worker.app import app
from worker.deadletter import Selection
from worker.runtime import runtime

ACTIONS = ("list", "show", "replay", "purge", "status")


@app.task(name="relay.admin", acks_late=True, ignore_result=False)
def admin(
    action: str,
    *,
    id: str | None = None,
    ids: list[str] | None = None,
    destination: str | None = None,
    reason: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    dry_run: bool = True,
) -> dict[str, Any]:
    rt = runtime(app.relay_settings)
    ops = Admin(app.relay_settings, rt.redis)
    selection = Selection(tuple(ids or ()), destination, reason, since, until, limit)
    if action == "list":
        return {"entries": ops.list(selection)}
    if action == "show":
        return {"entry": ops.show(id or "")}
    if action == "replay":
        return ops.replay(selection, dry_run=dry_run)
    if action == "purge":
        return ops.purge(selection, dry_run=dry_run)
    if action == "status":
        return ops.status()
    raise ValueError(f"action: {action!r} is not one of {', '.join(ACTIONS)}.")
