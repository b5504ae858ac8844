"""The scheduler inside every Celery worker: a bootstep running it in a thread of the main process.

The scheduler (:mod:`conversion_relay.engine.scheduler`) decides where a drain must start; this
module gives it the worker's settings and a way to start one: a ``relay.drain`` message, sent by
name to the destination's own queue.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import bootsteps

from conversion_relay.engine.scheduler import Scheduler

log = logging.getLogger("conversion_relay.scheduler")

#: The drain task's name (conversion_relay/tasks/delivery.py).
DRAIN_TASK = "relay.drain"


class SchedulerStep(bootsteps.StartStopStep):
    """Celery worker bootstep running the scheduler in a thread of the main process."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: object, **kwargs: object) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        settings = app.relay_settings

        def start_drain(destination: str, token: str, slot: int) -> None:
            queue = settings.destination(destination).queue
            app.send_task(DRAIN_TASK, args=[destination, token, slot], queue=queue)

        scheduler = Scheduler(settings, start_drain)
        try:
            scheduler.prepare()  # refuses an evicting Redis before the worker takes tasks
        except redis.RedisError as exc:
            log.warning("Redis is out of reach at start-up (%s); the scheduler waits for it", type(exc).__name__)
        self._thread = threading.Thread(target=self._loop, args=(scheduler,), name="relay-scheduler", daemon=True)
        self._thread.start()

    def stop(self, worker: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self, scheduler: Scheduler) -> None:
        while not self._stop.wait(scheduler.settings.tick_seconds):
            try:
                scheduler.run_once()
            except Exception:
                log.exception("scheduler tick failed; trying again next tick")
