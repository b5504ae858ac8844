"""The Dockerfile and docker-compose.yml, checked without Docker: what they say parses, every
``conversion-relay`` command and option they name exists, the image is slim and not root, Redis
is configured as production needs it, and the commands the containers run work here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from conversion_relay.cli import cli
from conversion_relay.cli.commands import PassThrough
from tests.conftest import DATA_DB
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
BIN = Path(sys.executable).parent


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined and comments dropped."""
    joined, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def strings(value: Any) -> list[str]:
    """Every string in a parsed YAML document, a list command joined into one line."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return [shlex.join(value), *value]
        return [text for item in value for text in strings(item)]
    return []


def invocations(texts: list[str]) -> list[list[str]]:
    """Every ``conversion-relay <command> [options]`` in the texts, up to a pipe or the end."""
    found = []
    for text in texts:
        for match in re.finditer(r"conversion-relay((?:\s+[^\s|;&\]\"']+)+)", text):
            found.append(match.group(1).split())
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def healthcheck_command(dockerfile: list[tuple[str, str]]) -> list[str]:
    (arguments,) = [args for name, args in dockerfile if name == "HEALTHCHECK"]
    words = shlex.split(arguments)
    return words[words.index("CMD") + 1 :]


def test_the_image_is_slim_and_runs_as_a_user_that_is_not_root(dockerfile):
    bases = [args.split()[0] for name, args in dockerfile if name == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    users = [args for name, args in dockerfile if name == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    after_user = [name for name, _ in dockerfile[[n for n, _ in dockerfile].index("USER") :]]
    assert "RUN" not in after_user[1:], "nothing may be installed as the unprivileged user"
    assert any(name == "RUN" and "useradd" in args and "--uid 10001" in args for name, args in dockerfile)


def test_the_image_installs_the_source_tree_as_a_wheel_and_has_a_healthcheck(dockerfile):
    runs = " ".join(args for name, args in dockerfile if name == "RUN")
    assert "pip wheel" in runs and "pip install /wheels/" in runs
    assert healthcheck_command(dockerfile)[:1] == ["conversion-relay"]
    copied = " ".join(args for name, args in dockerfile if name == "COPY")
    for needed in ("pyproject.toml", "README.md", "conversion_relay"):
        assert needed in copied


def test_the_build_context_leaves_out_the_virtualenv_and_the_repository():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "var"} <= ignored
    assert not {"conversion_relay", "pyproject.toml", "README.md"} & ignored


def test_redis_keeps_its_data_and_never_evicts(compose):
    command = compose["services"]["redis"]["command"]
    line = command if isinstance(command, str) else shlex.join(command)
    assert "--appendonly yes" in line
    assert "--maxmemory-policy noeviction" in line
    assert any(volume.endswith(":/data") for volume in compose["services"]["redis"]["volumes"])


def test_the_demo_has_its_services_and_sends_only_to_the_sandbox(compose):
    services = compose["services"]
    assert {"redis", "worker", "console", "sandbox", "producer"} <= set(services)
    for name in ("worker", "console", "producer"):
        env = services[name]["environment"]
        assert env["CONVERSION_RELAY_CONFIG"] == "sandbox"
        # Plain HTTP goes to loopback only (config/rules.py): the sandbox's network is shared.
        assert env["CONVERSION_RELAY_SANDBOX_URL"] == "http://127.0.0.1:8765"
        assert services[name]["network_mode"] == "service:sandbox"
        assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert "8765" in " ".join(services["sandbox"]["command"])
    assert services["producer"]["restart"] == "no"
    for ports in (service.get("ports", []) for service in services.values()):
        assert all(port.startswith("127.0.0.1:") for port in ports), "the demo publishes on loopback only"


def _command(path: list[str]) -> click.Command | None:
    command: click.Command = cli
    for word in path:
        if not isinstance(command, click.Group) or word not in command.commands:
            return None
        command = command.commands[word]
    return command


def test_every_command_and_option_named_exists(dockerfile, compose):
    named = invocations([args for _, args in dockerfile] + strings(compose))
    assert len(named) >= 6, named  # the healthcheck, CMD, worker, console, sandbox, producer
    for words in named:
        options = [w.split("=", 1)[0] for w in words if w.startswith("--")]
        if words[0].startswith("-"):
            assert set(options) <= {"--help", "--version", "--debug"}, words
            continue
        path = [w for w in words if not w.startswith("-")][:2]
        command = _command(path[:1])
        assert command is not None, f"conversion-relay {words[0]} is not a command"
        if isinstance(command, click.Group):
            command = _command(path)
            assert command is not None, f"conversion-relay {' '.join(path)} is not a command"
        if isinstance(command, PassThrough):
            continue  # worker: every option is Celery's
        known = {opt for param in command.params for opt in param.opts}
        assert set(options) <= known | {"--help"}, f"{words}: not options of conversion-relay {words[0]}"


def _environment(compose: dict[str, Any], service: str, redis_server: Any) -> dict[str, str]:
    """The service's environment, its Redis the private one, with this virtualenv's commands first."""
    env = {**os.environ, **compose["services"][service]["environment"]}
    env["REDIS_URL"] = redis_server.url(DATA_DB)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_healthcheck_command_runs(dockerfile, compose, redis_server, data, make_stack):
    command = healthcheck_command(dockerfile)
    env = _environment(compose, "worker", redis_server)
    stack = make_stack()  # ready once a worker runs: wait for its first heartbeat
    stack.start_worker()
    env = {**os.environ, **stack.env, "PATH": env["PATH"]}
    wait_for(
        lambda: subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 0,
        timeout=30,
        what="the healthcheck to pass",
    )
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workers_configuration_passes_check_config(compose, redis_server, data):
    """What the worker container would start with: the built-in configuration at the sandbox."""
    env = _environment(compose, "worker", redis_server)
    result = subprocess.run(["conversion-relay", "check-config"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_demo_producer_enqueues_its_conversions(compose, redis_server, data):
    """The producer's shell command, as the container runs it, against the private Redis."""
    command = compose["services"]["producer"]["command"]
    result = subprocess.run(
        command, env=_environment(compose, "producer", redis_server), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Enqueued 50 events.\n"
    streams = list(data.scan_iter(match="cr-sandbox:stream:*"))
    assert streams and sum(data.xlen(key) for key in streams) > 0
