"""``conversion-relay health``: 0 healthy, 3 not live, 4 not ready -- each from a real state."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conversion_relay.ops.health import EXIT_HEALTHY, EXIT_NOT_LIVE, EXIT_NOT_READY
from tests.conftest import gravity_destination
from tests.support import wait_for


def health(stack, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conversion_relay.cli", "health", *args],
        env={**stack.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def purchase(event_id: str) -> dict[str, object]:
    return {"event_name": "Purchase", "event_id": event_id, "custom_data": {"value": 1.0, "currency": "EUR"}}


@pytest.fixture
def stack(make_stack, sandbox, gravity):
    return make_stack(destinations={"gravity": gravity_destination(sandbox)})


def test_live_and_ready_with_a_worker_running(stack):
    assert health(stack, "--ready").returncode == EXIT_NOT_READY  # no worker yet
    stack.start_worker()
    wait_for(lambda: health(stack, "--ready").returncode == EXIT_HEALTHY, what="a ready relay")
    done = health(stack, "--ready")
    assert "ready (1 workers)" in done.stdout
    assert health(stack).returncode == EXIT_HEALTHY


def test_not_live_when_redis_is_out_of_reach(stack):
    for args in ((), ("--ready",)):
        done = health(stack, *args, REDIS_URL="redis://127.0.0.1:1/0")
        assert done.returncode == EXIT_NOT_LIVE, done.stderr
        assert "Redis" in done.stderr


def test_not_ready_without_a_worker_heartbeat_but_live(stack):
    done = health(stack, "--ready")
    assert done.returncode == EXIT_NOT_READY
    assert "no worker heartbeat" in done.stderr
    assert health(stack).returncode == EXIT_HEALTHY


def test_not_ready_on_an_evicting_redis(stack):
    stack.start_worker()
    wait_for(lambda: health(stack, "--ready").returncode == EXIT_HEALTHY, what="a ready relay")
    stack.redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        done = health(stack, "--ready")
    finally:
        stack.redis.config_set("maxmemory-policy", "noeviction")
    assert done.returncode == EXIT_NOT_READY
    assert "maxmemory-policy allkeys-lru" in done.stderr


def test_not_ready_when_a_destination_is_stalled(stack, gravity):
    gravity.configure(fail_all_status=503)
    stack.start_worker()
    stack.relay.enqueue([purchase("p-1")])
    wait_for(lambda: gravity.requests, what="a failed attempt at the vendor")
    done = health(stack, "--ready", "--stall-seconds", "0")
    assert done.returncode == EXIT_NOT_READY
    assert "destination gravity is stalled" in done.stderr and "never" in done.stderr
    assert health(stack, "--ready", "--stall-seconds", "3600").returncode == EXIT_HEALTHY
    gravity.configure(fail_all_status=None)
