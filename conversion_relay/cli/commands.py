"""The commands outside ``dlq``: status, check-config, enqueue, worker and sandbox."""

from __future__ import annotations

import json
import os
import sys

import click

from conversion_relay.cli.base import (
    EXIT_USAGE,
    CliError,
    connect_client,
    destinations_option,
    load,
    one_line,
    redis_errors,
    redis_session,
)
from conversion_relay.cli.render import status_table


@click.command(
    epilog="""\b
Examples:
  conversion-relay status
  conversion-relay status --json | jq '.gravity.backlog'"""
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, for monitoring.")
def status(as_json: bool) -> int:
    """Counters, backlog, back-off and waiting batches of every destination.

    Reads Redis only; safe to run at any time, from any machine that reaches the relay's Redis.
    """
    from conversion_relay.ops.admin import Admin

    settings = load()
    with redis_session(settings) as client:
        report = Admin(settings, client).status()
    click.echo(json.dumps(report, indent=2) if as_json else status_table(report))
    return 0


@click.command(
    "check-config",
    epilog="""\b
Examples:
  conversion-relay check-config
  CONVERSION_RELAY_CONFIG=/etc/conversion-relay/relay.toml conversion-relay check-config --json""",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, for deploy scripts.")
def check_config(as_json: bool) -> int:
    """Check the configuration in effect, the API keys it names and its Redis, all at once.

    Prints which configuration is in effect, every destination and every problem; exits 0 when a
    worker would start with it and 2 (one line on stderr naming the problems) when not, so a
    deploy can run it before starting workers.
    """
    from conversion_relay.ops.config_check import check_configuration

    report = check_configuration(os.environ)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo("\n".join(report.lines()))
    if not report.ok:
        count = len(report.problems)
        raise CliError(
            f"{count} problem{'s' if count != 1 else ''}: " + one_line("\n".join(report.problems)), EXIT_USAGE
        )
    return 0


@click.command(
    epilog="""\b
Examples:
  conversion-relay enqueue events.json
  conversion-relay enqueue events.json --destination gravity --destination tracify
  conversion-relay enqueue items.json --native reco --operation addItems
  cat events.json | conversion-relay enqueue -"""
)
@click.argument("file", metavar="FILE")
@destinations_option("Enqueue", "every enabled destination")
@click.option("--native", metavar="NAME", help="FILE is a vendor-native payload for this one destination.")
@click.option("--operation", metavar="OP", help="The vendor call a native payload is for (RECO: addItems, ...).")
def enqueue(file: str, destinations: tuple[str, ...], native: str | None, operation: str | None) -> int:
    """Validate canonical events (one or a list) from a JSON FILE and enqueue them.

    FILE is '-' for standard input. Nothing is enqueued unless every event is valid; the
    error names each bad field.
    """
    from conversion_relay.cli.jsonfile import parse_json
    from conversion_relay.client.producer import Relay
    from conversion_relay.errors import RelayError

    if native and destinations:
        raise CliError("--destination does not go with --native: a native payload is for its one destination.", 2)
    if operation and not native:
        raise CliError("--operation is for a native payload; add --native NAME, or leave --operation out.", 2)
    text = _read_input(file)
    settings = load()
    try:
        payload = parse_json(text, file)
        with redis_errors(settings.redis_url):
            client = connect_client(settings.redis_url)  # a URL redis-py refuses fails here, in one line
            client.close()
            with Relay(settings) as relay:
                # The producer turns Redis errors into EnqueueError; ask first, so that an
                # unreachable Redis is reported as for every other command.
                relay.redis.ping()
                if native:
                    count = relay.enqueue_native(native, payload, operation=operation)
                else:
                    count = len(relay.enqueue(payload, destinations=list(destinations) or None))
    except RelayError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"Enqueued {count} {'items' if native else 'events'}.")
    return 0


def _read_input(file: str) -> str:
    """The text of FILE (or standard input), or a one-line usage error saying why not."""
    if file == "-":
        return sys.stdin.read()
    try:
        with open(file, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        problem = f"no file at {file!r}; check the path, or give - to read standard input."
    except IsADirectoryError:
        problem = f"{file!r} is a folder; give a JSON file."
    except PermissionError:
        problem = f"{file!r} cannot be read (permission denied); check its permissions."
    except UnicodeDecodeError:
        problem = f"{file!r} is not UTF-8 text; save it as UTF-8 JSON."
    except OSError as exc:
        problem = f"{file!r} cannot be read ({exc.strerror or type(exc).__name__})."
    raise CliError(f"FILE: {problem}", EXIT_USAGE)


class PassThrough(click.Command):
    """A command whose arguments click does not parse: every one of them, ``--help`` and ``--``
    included, reaches Celery as written (``--`` starts Celery's extra configuration)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.params["celery_args"] = tuple(args)
        ctx.args = []
        return []


@click.command(
    cls=PassThrough,
    add_help_option=False,
    short_help="Run a Celery worker; every option is Celery's ('worker --help' lists them).",
)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run ``celery -A conversion_relay.worker.app worker`` with every argument as given.

    The process becomes Celery's (exec), so signals, exit status and ``--help`` are Celery's
    own: a supervisor stops it with SIGTERM as it would a plain Celery worker.  The configuration
    is loaded first, so that a bad one is one line here rather than Celery's traceback of the app;
    ``--help`` needs none.
    """
    ours = celery_args[: celery_args.index("--")] if "--" in celery_args else celery_args
    if "--help" in ours:
        # Celery's worker options are the same for every app: shown without loading ours, which
        # needs a configuration and a Redis the reader may not have yet.
        argv = [sys.executable, "-m", "celery", "worker", "--help"]
    else:
        load()
        argv = [sys.executable, "-m", "celery", "-A", "conversion_relay.worker.app", "worker", *celery_args]
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        raise CliError(f"cannot start the Celery worker ({exc.strerror}); check the installation.") from None


@click.command(
    "sandbox",
    epilog="""\b
Examples:
  conversion-relay sandbox
  conversion-relay sandbox --port 0""",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port on 127.0.0.1; 0 picks a free one.",
)
def sandbox_command(port: int) -> int:
    """Serve every vendor's local sandbox until Ctrl-C or SIGTERM.

    The built-in configuration points every destination here, so nothing reaches a real vendor.
    """
    from conversion_relay.sandbox.__main__ import main as sandbox_main

    try:
        return sandbox_main(["--port", str(port)])
    except OSError as exc:
        raise CliError(
            f"--port: cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another port, or 0 for a free one.",
            EXIT_USAGE,
        ) from None
