"""``conversion-relay console``: the web console, on loopback unless an access token is set."""

from __future__ import annotations

import os

import click

from conversion_relay.cli.base import EXIT_USAGE, CliError, load, redis_session

TOKEN_ENV = "CONVERSION_RELAY_CONSOLE_TOKEN"


@click.command(
    "console",
    epilog="""\b
Examples:
  conversion-relay console                      # http://127.0.0.1:8766
  ssh -L 8766:127.0.0.1:8766 relay-host         # then open it from your machine
  CONVERSION_RELAY_CONSOLE_TOKEN=... conversion-relay console --host 0.0.0.0""",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True, help="Port to listen on.")
@click.option(
    "--token-env",
    default=TOKEN_ENV,
    show_default=True,
    metavar="NAME",
    help="Environment variable holding the access token; required to listen beyond loopback.",
)
def console(host: str, port: int, token_env: str) -> int:
    """Serve the web console: destination status, dead letters (filter, show, export, replay,
    purge with a dry run and a confirmation).

    Listens on loopback only unless the variable named by --token-env holds an access token;
    with a token, every request needs it (a login form, or Authorization: Bearer).
    """
    from conversion_relay.console import ConsoleApp, ConsoleServer, Guard, check_bind
    from conversion_relay.errors import ConfigurationError
    from conversion_relay.ops.admin import Admin

    token = os.environ.get(token_env) or None
    try:
        check_bind(host, token)
    except ConfigurationError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    settings = load()
    with redis_session(settings) as client:
        try:
            server = ConsoleServer(ConsoleApp(Admin(settings, client), Guard(token)), host, port)
        except OSError as exc:
            raise CliError(
                f"--host/--port: cannot listen on {host}:{port} ({exc.strerror}); pick another --port.", EXIT_USAGE
            ) from None
        click.echo(f"conversion-relay console on {server.url} (Ctrl-C to stop)", err=True)
        server.serve_forever()
    return 0
