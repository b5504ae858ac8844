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
from tests.conftest import API_KEY, KEY_ENV, destination
from tests.support import free_port, write_config

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


def cli_env(tmp: Path, redis_url: str) -> dict[str, str]:
    """The environment of a deployment: a configuration file (one destination) and a Redis URL."""
    config = write_config(tmp / "relay.toml", {}, {"gravity": destination("gravity_capi", "http://127.0.0.1:9/capi")})
    env = {**os.environ, "REDIS_URL": redis_url, "CONVERSION_RELAY_CONFIG": str(config), KEY_ENV: API_KEY}
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("CONVERSION_RELAY_BROKER_URL", "SENTRY_DSN"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def nowhere(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], int]:
    """An environment whose Redis is a free loopback port: connection refused, at once."""
    port = free_port()
    return cli_env(tmp_path_factory.mktemp("nowhere"), f"redis://relay:{PASSWORD}@127.0.0.1:{port}/1"), port


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


@pytest.mark.parametrize("args", [["status"], ["dlq", "list"]], ids=" ".join)
def test_a_database_redis_does_not_have_is_one_line_not_a_traceback(redis_server, tmp_path, args):
    """The private server has four databases; database 9 is refused when the client selects it."""
    env = cli_env(tmp_path, redis_server.url(9))
    result = run_cli(env, *args)
    assert result.returncode == EXIT_REDIS_UNREACHABLE, (result.stdout, result.stderr)
    assert result.stderr.splitlines() == [
        f"conversion-relay: Redis at 127.0.0.1:{redis_server.port} answered 'DB index is out of range' "
        "(ResponseError); check REDIS_URL (the database number) and the Redis user's rights."
    ]
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["status"], ["dlq", "list"]], ids=" ".join)
def test_a_server_that_is_not_redis_is_one_line_not_a_traceback(sandbox, tmp_path, args):
    """The vendor sandbox answers HTTP on its port: what REDIS_URL names is something else."""
    port = sandbox.port
    result = run_cli(cli_env(tmp_path, f"redis://127.0.0.1:{port}/1"), *args)
    assert result.returncode == EXIT_REDIS_UNREACHABLE, (result.stdout, result.stderr)
    assert result.stderr.splitlines() == [
        f"conversion-relay: what answers at 127.0.0.1:{port} is not Redis (InvalidResponse); check REDIS_URL."
    ]


def test_check_config_reports_redis_out_of_reach_in_one_line(nowhere):
    env, _ = nowhere
    result = run_cli(env, "check-config")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Redis" in result.stderr
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
