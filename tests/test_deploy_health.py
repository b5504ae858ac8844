"""The health and metrics commands the deployment files run are ones the command line takes."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import click
import pytest

from conversion_relay.cli import cli

ROOT = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"/opt/conversion-relay/\.venv/bin/conversion-relay ([^|\n]+)")


def commands() -> list[str]:
    found = []
    for path in (
        "deploy/systemd/conversion-relay-health.service",
        "deploy/systemd/conversion-relay-metrics.service",
        "deploy/supervisor/conversion-relay.conf",
    ):
        found += [m.strip() for m in COMMAND.findall((ROOT / path).read_text())]
    return found


def parses(line: str) -> str:
    """The subcommand ``line`` runs, after click parsed its options (UsageError if it cannot)."""
    name, *args = shlex.split(line)
    command = cli.get_command(click.Context(cli), name)
    assert command is not None, name
    command.make_context(name, args)
    return name


def test_the_deployment_files_run_health_and_metrics_with_options_they_take():
    assert sorted(parses(line) for line in commands()) == ["health", "health", "metrics", "metrics"]
    supervisor = configparser.RawConfigParser()
    supervisor.read(ROOT / "deploy/supervisor/conversion-relay.conf")
    assert "metrics --host" in supervisor["program:conversion-relay-metrics"]["command"]


def test_an_option_the_command_does_not_take_is_refused():
    with pytest.raises(click.UsageError):
        parses("health --readyy")
