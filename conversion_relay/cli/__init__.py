"""The ``conversion-relay`` command line, on click.

click (which Celery already brings) lets ``worker`` hand every option to Celery untouched and
gives each command its own help with examples; :class:`~conversion_relay.cli.base.RelayGroup`
makes every failure one line on stderr with an exit status (1 refused or not found, 2
configuration or usage, 3 Redis out of reach).  ``main`` is the console script.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from conversion_relay.cli.base import EXIT_REDIS_UNREACHABLE, PROG, RelayGroup, parse_when
from conversion_relay.cli.commands import check_config, enqueue, sandbox_command, status, worker
from conversion_relay.cli.console import console
from conversion_relay.cli.dlq import dlq
from conversion_relay.cli.erase import erase
from conversion_relay.cli.explain import explain
from conversion_relay.cli.observe import health, metrics
from conversion_relay.store.connection import redis_location
from conversion_relay.version import __version__

__all__ = ["EXIT_REDIS_UNREACHABLE", "cli", "main", "parse_when", "redis_location"]


def version() -> str:
    return __version__


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"{PROG} {version()}")
        ctx.exit(0)


@click.group(
    PROG,
    cls=RelayGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  conversion-relay status
  conversion-relay worker --concurrency 4 -l INFO
  conversion-relay dlq list --destination gravity --since 2h
  conversion-relay dlq replay --reason http_401 --yes

Settings come from the environment: REDIS_URL, CONVERSION_RELAY_CONFIG (a TOML file),
CONVERSION_RELAY_BROKER_URL. Exit status: 0 done, 1 refused or not found, 2 configuration or
usage, 3 Redis out of reach.""",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the installed version and exit.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error instead of one line.")
def cli(debug: bool) -> None:
    """Deliver conversion events to ad vendors: check the configuration, enqueue events (or
    explain what they would become), run a worker, watch the destinations, and inspect, replay or purge dead letters."""


for _command in (status, check_config, enqueue, explain, worker, sandbox_command, dlq, erase, health, metrics):
    cli.add_command(_command)
cli.add_command(console)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    return cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
