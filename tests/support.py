"""Real parts for the tests: a private redis-server, Celery worker processes, configuration files.

Nothing here talks to a Redis the tests did not start: every server is launched on a free
loopback port with its data in a temporary directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conversion_relay.embedded import EmbeddedRedis, free_port

__all__ = ["RedisServer", "WorkerProcess", "free_port", "wait_for", "write_config"]

ROOT = Path(__file__).resolve().parent.parent


class RedisServer(EmbeddedRedis):
    """The tests' private server: four databases, nothing kept on disk."""

    def __init__(self) -> None:
        super().__init__(databases=4)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_config(path: Path, relay: dict[str, Any], destinations: dict[str, dict[str, Any]]) -> Path:
    lines = ["[relay]"] + [f"{k} = {toml_value(v)}" for k, v in relay.items()]
    for name, table in destinations.items():
        lines += ["", f"[destinations.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class WorkerProcess:
    """A real ``celery worker`` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-n",
                f"test-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._ready, timeout=60, interval=0.1, what=f"the Celery worker to start (log: {log_path})")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
        return b" ready." in self.log_path.read_bytes()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker, main process and pool children, with no chance to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self.log.closed:
            self.log.close()
