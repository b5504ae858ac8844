"""``relay.admin``: dead-letter operations and erasure for operators who drive the relay through
Celery.

    task name: relay.admin        queue: relay.admin
    args:      [action]           one of: list, show, replay, purge, erase, status
    kwargs:    selection keys (ids, destination, reason, since, until, limit, all),
               dry_run (replay/purge/erase, default true), id and events (show),
               email, phone, external_id (erase), origin (who asks, for the audit line)

Returns a JSON-able dict (the only task with a result).  Replay, purge and erase are dry runs
unless ``dry_run`` is false, and replay and purge need ids, a filter or ``all: true``.  The
``conversion-relay dlq`` command does the same from a shell, without Celery.

A result must not keep event data in the result backend: ``list`` gives entries without their
events or request group, ``show`` gives the events only with ``events: true``, and every result
of this task expires ``RESULT_SECONDS`` after it was stored (not the app's hour).  Celery's
success log line, which would repeat the return value, says ``<result not logged>``.  E-mail and
phone for ``erase`` may be given as their SHA-256 digests, which keeps the values out of the
broker message too.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.app import backends

from conversion_relay.engine.runtime import runtime
from conversion_relay.errors import ConfigurationError
from conversion_relay.ops.admin import RESULT_SECONDS, Admin
from conversion_relay.store.deadletter import Selection
from conversion_relay.worker.app import app

ACTIONS = ("list", "show", "replay", "purge", "erase", "status")


class _ResultNotLogged(logging.Filter):
    """Celery logs a task's return value (and hands its arguments to handlers) at INFO on
    success; for relay.admin those may be events or the person an erasure is for."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = record.args
        if isinstance(context, dict) and context.get("name") == "relay.admin" and "return_value" in context:
            hidden = {**context, "return_value": "<result not logged>", "args": "", "kwargs": ""}
            record.args = hidden
            if isinstance(getattr(record, "data", None), dict):
                record.data = hidden
        return True


logging.getLogger("celery.app.trace").addFilter(_ResultNotLogged())


class AdminTask(app.Task):  # type: ignore[name-defined,misc]
    """Stores its results with a backend of its own whose results expire after
    ``RESULT_SECONDS``: set when the result is written, so no result outlives it even by a moment
    (the app's ``result_expires`` of an hour stays for every other task)."""

    @property
    def backend(self) -> Any:
        if self._backend is None:
            cls, url = backends.by_url(self.app.backend_cls or self.app.conf.result_backend, self.app.loader)
            self._backend = cls(app=self.app, url=url, expires=RESULT_SECONDS)
        return self._backend

    @backend.setter
    def backend(self, value: Any) -> None:
        self._backend = value


#: A refused request is the caller's to fix: logged as expected, without a traceback.
REFUSALS = (ValueError, ConfigurationError)


@app.task(name="relay.admin", base=AdminTask, acks_late=True, ignore_result=False, throws=REFUSALS)
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
    all: bool = False,
    dry_run: bool = True,
    events: bool = False,
    email: str | None = None,
    phone: str | None = None,
    external_id: str | None = None,
    origin: str = "celery",
) -> dict[str, Any]:
    """Run one operator action; see the module docstring for the arguments and the result.

    Raises:
        ValueError: an unknown action, or arguments the action refuses (the message names the
            field and what to give instead, never a personal value).
    """
    if action not in ACTIONS:
        raise ValueError(f"action: {action!r} is not one of {', '.join(ACTIONS)}.")
    rt = runtime(app.relay_settings)
    ops = Admin(app.relay_settings, rt.redis)
    if action == "status":
        return ops.status()
    if action == "show":
        return {"entry": ops.show(id or "", events=events is True)}
    if action == "erase":
        return ops.erase(email=email, phone=phone, external_id=external_id, dry_run=dry_run is not False, origin=origin)
    selection = Selection(ids or (), destination, reason, since, until, limit, all)
    if action == "list":
        return {"entries": [letter.brief() for letter in ops.letters.select(selection)]}
    if action == "replay":
        return ops.replay(selection, dry_run=dry_run is not False, origin=origin)
    return ops.purge(selection, dry_run=dry_run is not False, origin=origin)
