"""``conversion-relay metrics`` and ``conversion-relay health``: what monitoring runs."""

from __future__ import annotations

import sys

import click

from conversion_relay.cli.base import EXIT_USAGE, CliError, connect_client, load, redis_errors

#: Exit statuses of ``health`` (conversion_relay/ops/health.py holds them).
HEALTH_EPILOG = """\b
Examples:
  conversion-relay health              # live: Redis answers
  conversion-relay health --ready      # ready: and no eviction, a worker, nothing stalled

Exit status: 0 healthy, 3 not live (Redis out of reach), 4 not ready (each problem on stderr),
2 configuration or usage."""


@click.command(epilog=HEALTH_EPILOG)
@click.option("--ready", is_flag=True, help="Check readiness too, not only that Redis answers.")
@click.option(
    "--stall-seconds",
    type=click.FloatRange(min=0),
    default=None,
    metavar="S",
    help="A destination whose oldest event waits longer than this, with no success for as long, is stalled "
    "(default 600).",
)
def health(ready: bool, stall_seconds: float | None) -> int:
    """Whether the relay is live (Redis answers) and, with --ready, ready to deliver.

    For the systemd unit, supervisor and the container healthcheck; prints one line per problem.
    """
    from conversion_relay.ops.health import DEFAULT_STALL_SECONDS, check

    settings = load()
    with redis_errors(settings.redis_url):
        client = connect_client(settings.redis_url, socket_timeout=5.0)
    try:
        found = check(settings, client, stall_seconds=DEFAULT_STALL_SECONDS if stall_seconds is None else stall_seconds)
    finally:
        client.close()
    code = found.exit_code(ready=ready)
    problems = found.problems if (ready or not found.live) else []
    for problem in problems:
        click.echo(f"conversion-relay health: {problem}", err=True)
    if not code:
        what = f"ready ({found.workers} workers)" if ready else "live"
        click.echo(f"conversion-relay health: {what}")
    return code


@click.command(
    epilog="""\b
Examples:
  conversion-relay metrics --port 9808
  conversion-relay metrics --once > /var/lib/node_exporter/conversion_relay.prom"""
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=9808, show_default=True, help="Port to serve /metrics on."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every one).")
@click.option("--once", is_flag=True, help="Print one scrape on stdout and exit, instead of serving.")
def metrics(port: int, host: str, once: bool) -> int:
    """Serve the relay's metrics in the Prometheus text format, read from Redis at every scrape.

    One process serves the whole relay, however many workers and hosts run.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    from conversion_relay.ops.metrics import metrics_text, registry

    settings = load()
    if once:
        sys.stdout.buffer.write(metrics_text(settings))
        return 0

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    try:
        server = make_server(host, port, make_wsgi_app(registry(settings)), handler_class=Quiet)
    except OSError as exc:
        raise CliError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); pick another.", EXIT_USAGE
        ) from None
    click.echo(f"conversion-relay metrics: serving http://{host}:{server.server_port}/metrics", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
