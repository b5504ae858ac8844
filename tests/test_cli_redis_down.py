"""``conversion-relay`` with Redis out of reach: one line on stderr, exit status 3, no secrets.

The real command runs as a subprocess with ``REDIS_URL`` pointing at a free loopback port where
nothing listens (and a password in the URL, which must never be printed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conversion_relay.cli import EXIT_REDIS_UNREACHABLE, redis_location
from tests.support import free_port

PASSWORD = "s3cret-redis-pass"

COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["dlq", "list"],
    ["dlq", "list", "--destination", "gravity", "--since", "2h"],
    ["dlq", "show", "3f2c0000000000000000000000000000"],
    ["dlq", "export"],
    ["dlq", "replay", "--all"],
    ["dlq", "replay", "--reason", "http_401", "--yes"],
    ["dlq", "purge", "--all", "--yes"],
    ["dlq", "purge", "--until", "30d"],
]


@pytest.fixture(scope="module")
def nowhere() -> tuple[dict[str, str], int]:
    """An environment whose Redis is a free loopback port: connection refused, at once."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://relay:{PASSWORD}@127.0.0.1:{port}/1", "PYTHONUNBUFFERED": "1"}
    for name in ("CONVERSION_RELAY_CONFIG", "CONVERSION_RELAY_BROKER_URL", "SENTRY_DSN"):
        env.pop(name, None)
    return env, port


def run_cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conversion_relay.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_unreachable(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode == EXIT_REDIS_UNREACHABLE, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.splitlines() == [
        f"conversion-relay: cannot reach Redis at 127.0.0.1:{port} (ConnectionError); is it running? check REDIS_URL."
    ]
    assert result.stdout == ""
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_admin_commands_say_redis_is_out_of_reach_in_one_line(nowhere, args):
    env, port = nowhere
    assert_unreachable(run_cli(env, *args), port)


def test_export_to_a_file_writes_no_file(nowhere, tmp_path):
    env, port = nowhere
    target = tmp_path / "letters.jsonl"
    assert_unreachable(run_cli(env, "dlq", "export", "-o", str(target)), port)
    assert not target.exists()


def test_enqueue_says_redis_is_out_of_reach_in_one_line(nowhere, tmp_path):
    env, port = nowhere
    events = tmp_path / "events.json"
    events.write_text('[{"event_name": "Purchase", "event_id": "o-1", "user_data": {"em": ["a@example.com"]}}]')
    assert_unreachable(run_cli(env, "enqueue", str(events)), port)
    assert_unreachable(run_cli(env, "enqueue", str(events), "--destination", "gravity"), port)


def test_native_enqueue_says_redis_is_out_of_reach_in_one_line(nowhere, tmp_path):
    env, port = nowhere
    items = tmp_path / "items.json"
    items.write_text('[{"itemId": "SKU-1", "title": "Shoe"}]')
    assert_unreachable(run_cli(env, "enqueue", str(items), "--native", "reco", "--operation", "addItems"), port)


def test_check_config_needs_no_redis(nowhere):
    env, _ = nowhere
    result = run_cli(env, "check-config")
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://:pw@10.0.0.5:6380/2", "10.0.0.5:6380"),
        ("rediss://user:pw@cache.internal/0", "cache.internal:6379"),
        ("redis://[::1]:7000/0", "[::1]:7000"),
        ("unix:///run/redis/redis.sock?db=1", "/run/redis/redis.sock"),
        ("redis://:pw@host:notaport/0", "the configured address"),
    ],
)
def test_the_location_never_carries_credentials(url, where):
    assert redis_location(url) == where
