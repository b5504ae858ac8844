"""The check-config report (``conversion_relay.ops.config_check``) and the API keys a worker needs.

The report is tested against a private redis-server (the session's, and one with an evicting
policy started here) and against a loopback port where nothing listens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conversion_relay.config.rules import require_api_keys
from conversion_relay.config.settings import load_settings
from conversion_relay.embedded import EmbeddedRedis
from conversion_relay.engine.runtime import Runtime
from conversion_relay.errors import ConfigurationError
from conversion_relay.ops.config_check import check_configuration
from tests.support import UNUSED_REDIS, free_port, write_config

SECRET = "sk-live-3b9d0c7e21f54a"
PASSWORD = "redis-pw-8c1f"
ROOT = Path(__file__).resolve().parent.parent


def gravity(**extra: Any) -> dict[str, Any]:
    return {
        "vendor": "gravity_capi",
        "base_url": "https://api.trygravity.example",
        "api_key_env": "GRAVITY_KEY",
        **extra,
    }


def tracify(**extra: Any) -> dict[str, Any]:
    return {"vendor": "tracify", "customer_site_id": "00000000-0000-0000-0000-000000000000", **extra}


def config(tmp_path: Path, relay: dict[str, Any] | None = None, **destinations: dict[str, Any]) -> str:
    return str(write_config(tmp_path / "relay.toml", relay or {}, destinations or {"gravity": gravity()}))


@pytest.fixture
def evicting_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(extra=("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru"))
    yield server
    server.stop()


# --- producers need no keys, workers need every one ---------------------------------------------


def test_require_api_keys_names_every_missing_variable_of_the_enabled_destinations(tmp_path):
    path = config(
        tmp_path,
        gravity=gravity(),
        tracify=tracify(),
        old=gravity(api_key_env="OLD_KEY", enabled=False),
    )
    settings = load_settings({"CONVERSION_RELAY_CONFIG": path, "REDIS_URL": UNUSED_REDIS})
    with pytest.raises(ConfigurationError) as info:
        require_api_keys(settings)
    assert info.value.problems == (
        "destinations.gravity.api_key_env: Environment variable GRAVITY_KEY is not set; export the destination's "
        "API key in it before starting the worker.",
        "destinations.tracify.api_key_env: Environment variable CONVERSION_RELAY_TRACIFY_API_KEY is not set; "
        "export the destination's API key in it before starting the worker.",
    )
    assert str(info.value) == "missing API keys: " + "\n  ".join(info.value.problems)
    keyed = load_settings(
        {
            "CONVERSION_RELAY_CONFIG": path,
            "REDIS_URL": UNUSED_REDIS,
            "GRAVITY_KEY": SECRET,
            "CONVERSION_RELAY_TRACIFY_API_KEY": SECRET,
        }
    )
    require_api_keys(keyed)  # the disabled destination sends nothing and needs no key


def test_a_destination_without_its_key_never_gets_a_sender(tmp_path):
    settings = load_settings({"CONVERSION_RELAY_CONFIG": config(tmp_path), "REDIS_URL": UNUSED_REDIS})
    with pytest.raises(ConfigurationError, match="Environment variable GRAVITY_KEY is not set"):
        Runtime(settings).destination("gravity")


def test_a_worker_without_the_keys_refuses_to_start_naming_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GRAVITY_KEY", "SENTRY_DSN")}
    env.update(CONVERSION_RELAY_CONFIG=config(tmp_path), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "conversion_relay.worker.app",
        "worker",
        "--pool=solo",
        "--without-mingle",
    ]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "destinations.gravity.api_key_env: Environment variable GRAVITY_KEY is not set" in done.stderr


# --- the report ---------------------------------------------------------------------------------


def test_report_of_the_sandbox_configuration_against_a_reachable_redis(redis_server):
    report = check_configuration({"CONVERSION_RELAY_CONFIG": "sandbox", "REDIS_URL": redis_server.url(1)})

    assert report.ok, report.lines()
    lines = report.lines()
    assert lines[:3] == [
        "configuration: built-in sandbox configuration",
        "key prefix: cr-sandbox",
        f"redis: 127.0.0.1:{redis_server.port}, reachable, maxmemory-policy noeviction",
    ]
    assert "  gravity: gravity_capi at http://127.0.0.1:8765/gravity-capi (enabled; the sandbox's key)" in lines
    assert (
        "    max_events 200 (limit 200, documented by the vendor), max_bytes 1,000,000 (limit 1,000,000, "
        "documented by the vendor), parallel_drains 2, rate limit none"
    ) in lines
    assert lines[-1] == "ok: a worker would start with this configuration"
    data = json.loads(json.dumps(report.as_dict()))
    assert data["ok"] is True and data["problems"] == []
    assert data["redis"] == {
        "location": f"127.0.0.1:{redis_server.port}",
        "reachable": True,
        "eviction_policy": "noeviction",
        "eviction_accepted": False,
    }
    assert [d["name"] for d in data["destinations"]] == ["gravity", "field", "reco", "tracify"]
    assert data["destinations"][1]["max_events_limit_documented"] is False


def test_report_names_the_file_and_lists_every_problem_and_missing_key_at_once(tmp_path, redis_server):
    path = config(
        tmp_path,
        {"retry_horizon_seconds": 0, "flush_deadline": 1.0},
        gravity=gravity(max_events=5000),
        tracify=tracify(),
    )
    report = check_configuration({"CONVERSION_RELAY_CONFIG": path, "REDIS_URL": redis_server.url(1)})

    assert not report.ok
    assert report.source == path and report.lines()[0] == f"configuration: {path}"
    assert [p.split(":", 1)[0] for p in report.problems] == [
        "relay.retry_horizon_seconds",
        "relay.flush_deadline",
        "destinations.gravity.max_events",
        "destinations.gravity.api_key_env",
        "destinations.tracify.api_key_env",
    ]
    assert "Environment variable CONVERSION_RELAY_TRACIFY_API_KEY is not set" in report.problems[-1]
    assert report.redis is not None and report.redis.reachable  # checked although the file is invalid
    assert report.lines()[-6:] == ["5 problems:"] + [f"  {p}" for p in report.problems]


def test_report_of_a_valid_file_lists_the_missing_keys_and_the_destinations_without_secrets(tmp_path):
    env = {
        "CONVERSION_RELAY_CONFIG": config(tmp_path, gravity=gravity(), tracify=tracify()),
        "REDIS_URL": f"redis://relay:{PASSWORD}@127.0.0.1:{free_port()}/1",
        "GRAVITY_KEY": SECRET,
    }
    report = check_configuration(env, redis_timeout=0.5)

    lines = report.lines()
    assert "  gravity: gravity_capi at https://api.trygravity.example (enabled; key from GRAVITY_KEY: set)" in lines
    assert (
        "  tracify: tracify at https://api.tracify.ai (enabled; key from CONVERSION_RELAY_TRACIFY_API_KEY: NOT SET)"
    ) in lines
    assert report.problems[0].startswith("destinations.tracify.api_key_env: Environment variable CONVERSION_RELAY_")
    everything = "\n".join(lines) + json.dumps(report.as_dict())
    assert SECRET not in everything and PASSWORD not in everything


def test_report_names_the_webhook_token_a_worker_would_miss(tmp_path):
    relay = {"notify_webhook_url": "https://hooks.example.com/relay", "notify_webhook_token_env": "HOOK_TOKEN"}
    env = {"CONVERSION_RELAY_CONFIG": config(tmp_path, relay, gravity=gravity()), "GRAVITY_KEY": SECRET}
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/1"
    assert "relay.notify_webhook_token_env: Environment variable HOOK_TOKEN is not set; " in "\n".join(
        check_configuration(env, redis_timeout=0.5).problems
    )
    env["HOOK_TOKEN"] = "hook-token-77aa"
    report = check_configuration(env, redis_timeout=0.5)
    assert not [p for p in report.problems if "notify_webhook" in p]
    assert "hook-token-77aa" not in "\n".join(report.lines()) + json.dumps(report.as_dict())


def test_redis_where_nothing_listens_is_a_problem_found_quickly(tmp_path):
    port = free_port()
    env = {"CONVERSION_RELAY_CONFIG": config(tmp_path), "REDIS_URL": f"redis://127.0.0.1:{port}/1", "GRAVITY_KEY": "k"}
    started = time.monotonic()
    report = check_configuration(env, redis_timeout=0.5)

    assert time.monotonic() - started < 3.0
    assert not report.ok
    assert report.problems == [
        f"Redis at 127.0.0.1:{port} is not reachable (ConnectionError, waited up to 0.5 s); is it running? "
        "check REDIS_URL or relay.redis_url."
    ]
    assert f"redis: 127.0.0.1:{port}, NOT REACHABLE" in report.lines()
    assert report.as_dict()["redis"]["reachable"] is False
    assert [d.name for d in report.destinations] == ["gravity"]  # shown all the same


def test_a_redis_that_evicts_is_a_problem_unless_the_configuration_accepts_it(tmp_path, evicting_redis):
    env = {"CONVERSION_RELAY_CONFIG": config(tmp_path), "REDIS_URL": evicting_redis.url(0), "GRAVITY_KEY": "k"}
    report = check_configuration(env)
    assert not report.ok
    assert report.problems[0].startswith(
        f"relay.allow_evicting_redis: Redis at 127.0.0.1:{evicting_redis.port} has maxmemory-policy allkeys-lru"
    )
    assert report.redis is not None and report.redis.eviction_policy == "allkeys-lru"

    env["CONVERSION_RELAY_CONFIG"] = config(tmp_path, {"allow_evicting_redis": True})
    accepted = check_configuration(env)
    assert accepted.ok, accepted.problems
    assert (
        f"redis: 127.0.0.1:{evicting_redis.port}, reachable, maxmemory-policy allkeys-lru "
        "(may evict events: accepted by relay.allow_evicting_redis)"
    ) in accepted.lines()


def test_report_without_a_configuration_says_so_and_still_checks_redis(redis_server):
    report = check_configuration({"REDIS_URL": redis_server.url(1)})
    assert not report.ok and report.source is None
    assert report.lines()[0] == "configuration: none (CONVERSION_RELAY_CONFIG is not set)"
    assert len(report.problems) == 1 and report.problems[0].startswith("CONVERSION_RELAY_CONFIG is not set; set it")
    assert report.redis is not None and report.redis.reachable
