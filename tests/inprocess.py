"""The relay's scheduler and drains in threads of the test process, every request recorded.

Real Redis, real sandbox, the real scheduler and drain code -- only the worker processes are
threads here, so a test can see each request the relay sends (when it left, when the answer
came back, which events it carried) and stop or starve a drain at a chosen moment.  Each drain
gets a runtime of its own, as it would in a pool process of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.vendor import body_ids
from conversion_relay.config.settings import Settings
from conversion_relay.engine.drain import Drainer, DrainReport
from conversion_relay.engine.runtime import Runtime
from conversion_relay.engine.scheduler import Scheduler


@dataclass
class Sent:
    """One request the relay made."""

    destination: str
    started: float
    finished: float
    #: ``started`` on the wall clock (what Redis times are compared with).
    wall: float
    ids: list[str]
    status: int | None


@dataclass
class Recorder:
    requests: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Called just before a request leaves (a test's hook to interfere at that moment).
    before: Callable[[str, list[str]], None] | None = None

    def watch(self, rt: Runtime, destination: str) -> None:
        """Record every request ``rt`` sends to ``destination``."""
        transport = rt.destination(destination).transport
        vendor = rt.settings.destination(destination).vendor
        send = transport.send

        def recorded(request: Any) -> Any:
            ids = body_ids(vendor, request.body)
            if self.before is not None:
                self.before(destination, ids)
            wall, started = time.time(), time.monotonic()
            response = send(request)
            status = getattr(response, "status", None)
            with self.lock:
                self.requests.append(Sent(destination, started, time.monotonic(), wall, ids, status))
            return response

        transport.send = recorded  # type: ignore[method-assign]

    def sent(self, destination: str | None = None) -> list[Sent]:
        with self.lock:
            return [r for r in self.requests if destination is None or r.destination == destination]

    def overlapping(self, destination: str | None = None) -> list[str]:
        """Ids that were in two requests at the same time."""
        spans: dict[str, list[tuple[float, float]]] = {}
        for request in self.sent(destination):
            for event_id in request.ids:
                spans.setdefault(event_id, []).append((request.started, request.finished))
        found = []
        for event_id, times in spans.items():
            times.sort()
            if any(later[0] < earlier[1] for earlier, later in zip(times, times[1:])):
                found.append(event_id)
        return found


class Workers:
    """A worker's scheduler ticking in a thread, each drain it starts in a thread of its own."""

    def __init__(self, settings: Settings, recorder: Recorder) -> None:
        self.settings = settings
        self.recorder = recorder
        self.scheduler = Scheduler(settings, self._start)
        self.reports: list[DrainReport] = []
        self._drains: list[threading.Thread] = []
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="test-scheduler", daemon=True)

    def __enter__(self) -> Workers:
        self.scheduler.prepare()
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._ticker.join(5)
        for thread in self._drains:
            thread.join(30)

    def _tick(self) -> None:
        while not self._stop.wait(self.settings.tick_seconds):
            self.scheduler.run_once()

    def _start(self, destination: str, token: str, slot: int) -> None:
        thread = threading.Thread(target=self._drain, args=(destination, token, slot), daemon=True)
        self._drains.append(thread)
        thread.start()

    def _drain(self, destination: str, token: str, slot: int) -> None:
        rt = Runtime(self.settings)
        self.recorder.watch(rt, destination)
        self.reports.append(Drainer(rt, destination, token, slot).run())
