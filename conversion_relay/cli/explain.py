"""``conversion-relay explain``: the requests an event would become, per destination, or why not.

It needs the configuration only: no Redis, no API key, no vendor.  Events are validated as
``enqueue`` validates them, so a file ``explain`` accepts is one ``enqueue`` accepts.
"""

from __future__ import annotations

import json
import os

import click

from conversion_relay.cli.base import destinations_option
from conversion_relay.cli.commands import _read_input

#: The Redis URL explain runs with when none is configured: it never connects, but settings
#: need one.
NO_REDIS = "redis://explain-never-connects.invalid:6379/0"


@click.command(
    epilog="""\b
Examples:
  conversion-relay explain order.json
  conversion-relay explain order.json --destination gravity --destination tracify
  conversion-relay explain order.json --json | jq '.events[0].destinations'"""
)
@click.argument("file", metavar="FILE")
@destinations_option("Explain", "every configured destination")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON, for tools.")
def explain(file: str, destinations: tuple[str, ...], as_json: bool) -> int:
    """Show what canonical events (one or a list) from a JSON FILE would become, without
    sending or storing anything.

    FILE is '-' for standard input. The events are validated as 'enqueue' would (the same
    errors); then, for each destination, the request a drain would send for each event alone
    (method, URL path, JSON body; never the API key) or why the event would be skipped there
    (the vendor's reason, skip_events, or a disabled destination).
    """
    from conversion_relay.cli.jsonfile import parse_json
    from conversion_relay.client.prepare import Producer
    from conversion_relay.config.settings import load_settings

    text = _read_input(file)
    settings = load_settings({"REDIS_URL": NO_REDIS, **os.environ})
    payload = parse_json(text, file)
    explanation = Producer(settings).explain(payload, destinations=list(destinations) or None)
    if as_json:
        click.echo(json.dumps(explanation.as_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(explanation.lines()))
    return 0
