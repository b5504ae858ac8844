"""The real processes of a chaos scenario: redis-server, the counting sandbox, Celery workers.

Each is started here on a free loopback port, and stopped here; nothing touches a process or a
Redis this module did not start.  Redis keeps an append-only file so that a SIGKILL and a
restart on the same port and directory bring back what it had acknowledged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from conversion_relay.embedded import EmbeddedRedis, EmbeddedWorker, terminate

#: ``appendfsync`` of the chaos Redis: what docs/operations.md asks of production.
APPENDFSYNC = "everysec"


class RedisProcess(EmbeddedRedis):
    """``redis-server`` with AOF in ``directory``; ``kill`` and ``start`` keep port and data."""

    def __init__(self, directory: Path, *, maxmemory_mb: int | None = None) -> None:
        extra = ("--appendfsync", APPENDFSYNC, "--logfile", str(Path(directory) / "redis.log"))
        if maxmemory_mb:
            extra += ("--maxmemory", f"{maxmemory_mb}mb", "--maxmemory-policy", "noeviction")
        super().__init__(directory, persist=True, databases=4, extra=extra)

    def used_memory(self) -> int:
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            return int(client.info("memory")["used_memory"])
        finally:
            client.close()


class VendorProcess:
    """``bench.chaos.vendor`` in a subprocess, driven through the sandbox's control API."""

    def __init__(self, log_path: Path) -> None:
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.chaos.vendor", "--port", "0"], stdout=subprocess.PIPE, stderr=self.log
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the counting sandbox did not start; see {log_path}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def url_for(self, prefix: str) -> str:
        return f"{self.url}/{prefix}"

    def _call(self, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_sandbox/{path}", data=data)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def configure(self, prefix: str, **faults: Any) -> None:
        self._call(f"{prefix}/faults", faults)

    def summary(self, prefix: str) -> dict[str, Any]:
        return self._call(f"{prefix}/state?summary=1")

    def log_of(self, prefix: str) -> list[list[Any]]:
        return self._call(f"{prefix}/state")["chaos_log"]

    def in_flight(self, prefix: str) -> int:
        return int(self.summary(prefix)["in_flight"])

    def stop(self) -> None:
        terminate(self.proc)
        self.log.close()


@dataclass
class Managed:
    """A worker and what the scenario did to it."""

    worker: EmbeddedWorker
    started_at: float
    signalled: str = ""  # "sigkill", "sigterm-main", "sigterm-group" when the scenario did it
    signalled_at: float | None = None
    exited_at: float | None = None
    notes: list[str] = field(default_factory=list)


class WorkerPool:
    """The scenario's Celery workers: started, killed, terminated and counted here."""

    def __init__(self, env: dict[str, str], directory: Path, concurrency: int) -> None:
        self.env = env
        self.dir = directory
        self.concurrency = concurrency
        self.members: list[Managed] = []

    def start(self) -> Managed:
        log = self.dir / f"worker-{len(self.members)}.log"
        member = Managed(EmbeddedWorker(self.env, log, concurrency=self.concurrency), time.time())
        self.members.append(member)
        return member

    @property
    def running(self) -> list[Managed]:
        return [m for m in self.members if not m.signalled and m.worker.proc.poll() is None]

    def sigkill(self, member: Managed) -> None:
        """``kill -9`` of the whole group: main process and pool children, no clean-up."""
        self._mark(member, "sigkill")
        os.killpg(member.worker.proc.pid, signal.SIGKILL)
        member.worker.proc.wait(10)
        member.exited_at = time.time()

    def sigterm(self, member: Managed, *, group: bool) -> None:
        """A warm shutdown asked of the main process, or SIGTERM to every process of the worker."""
        self._mark(member, "sigterm-group" if group else "sigterm-main")
        if group:
            os.killpg(member.worker.proc.pid, signal.SIGTERM)
        else:
            os.kill(member.worker.proc.pid, signal.SIGTERM)

    def _mark(self, member: Managed, how: str) -> None:
        member.signalled, member.signalled_at = how, time.time()

    def poll(self) -> None:
        """Note when signalled workers finished exiting."""
        for member in self.members:
            if member.exited_at is None and member.worker.proc.poll() is not None:
                member.exited_at = time.time()

    def unexpected_exits(self) -> list[dict[str, Any]]:
        """Workers whose main process exited although the scenario did not signal them."""
        self.poll()
        found = []
        for n, member in enumerate(self.members):
            code = member.worker.proc.poll()
            if code is not None and not member.signalled:
                tail = member.worker.output()[-1500:]
                found.append({"worker": n, "exit_code": code, "after_s": _ago(member), "log_tail": tail})
        return found

    def shutdown_times(self) -> list[dict[str, Any]]:
        """How long each signalled worker took to exit (None: still running at the end)."""
        self.poll()
        out = []
        for member in self.members:
            if member.signalled and member.signalled != "sigkill":
                took = None if member.exited_at is None else round(member.exited_at - (member.signalled_at or 0), 1)
                out.append({"signal": member.signalled, "exit_after_s": took})
        return out

    def stop(self) -> None:
        for member in self.members:
            try:
                member.worker.stop()
            except (ProcessLookupError, OSError):
                pass


def _ago(member: Managed) -> float | None:
    return None if member.exited_at is None else round(member.exited_at - member.started_at, 1)
