"""``conversion-relay worker``: every Celery worker option passes through, as the README says.

The installed console script runs as a real process against the private Redis; it becomes the
Celery worker (exec), which must come up with the options given, deliver an event and stop
warmly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support import wait_for

SCRIPT = Path(sys.executable).with_name("conversion-relay")


def console_script() -> str:
    assert SCRIPT.exists(), f"no console script at {SCRIPT}; install the project (pip install -e .)"
    return str(SCRIPT)


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while b" ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker did not become ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return log.read_text()


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Warm shutdown of the worker's process group, as a supervisor does it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            pytest.fail("the worker did not stop within 30 s of SIGTERM")
    return proc.returncode


def test_worker_takes_celery_options_delivers_and_stops_warmly(make_stack, gravity, tmp_path):
    stack = make_stack()
    log = tmp_path / "worker.log"
    name = f"relay-cli-{uuid.uuid4().hex[:8]}@%h"
    args = ["worker", "--concurrency", "1", "-l", "INFO", "--without-mingle", "--without-gossip", "-n", name]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [console_script(), *args], env=stack.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        banner = wait_ready(proc, log)
        assert "concurrency: 1 (prefork)" in banner
        assert name.split("@")[0] in banner
        stack.relay.enqueue({"event_name": "Purchase", "event_id": "cli-worker-1", "user_data": {"em": ["a@b.de"]}})
        [event] = wait_for(lambda: gravity.events, timeout=30, what="the worker to deliver the event")
        assert event["event_id"] == "cli-worker-1"
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
    assert "Warm shutdown" in log.read_text()


def test_worker_help_is_celerys_worker_help(make_stack):
    stack = make_stack()
    result = subprocess.run(
        [console_script(), "worker", "--help"], env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Start worker instance." in result.stdout
    assert "--concurrency" in result.stdout and "--loglevel" in result.stdout


def test_worker_help_needs_no_configuration_and_no_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CONVERSION_RELAY_CONFIG", "REDIS_URL")}
    result = subprocess.run(
        [console_script(), "worker", "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Start worker instance." in result.stdout and "--concurrency" in result.stdout


def test_a_bad_configuration_is_one_line_before_celery_starts(make_stack, tmp_path):
    stack = make_stack()
    missing = tmp_path / "nowhere.toml"
    env = {**stack.env, "CONVERSION_RELAY_CONFIG": str(missing)}
    result = subprocess.run(
        [console_script(), "worker", "--concurrency", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("conversion-relay: CONVERSION_RELAY_CONFIG: no file at ")
    assert "Traceback" not in result.stdout + result.stderr
