"""``conversion-relay erase``: remove every stored event of one person (an erasure request).

Like ``dlq replay`` and ``dlq purge`` it says what it would remove first and acts only with
``--yes``; the values given are hashed as the producer hashes them and never printed.
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

import click

from conversion_relay.cli.base import EXIT_USAGE, CliError, load, redis_session
from conversion_relay.cli.progress import progress

PLACES = ("stream", "waiting", "dead_letters")


def erase_summary(counts: dict[str, dict[str, int]]) -> str:
    """``stream gravity 2, tracify 1; waiting gravity 1`` -- places with nothing are left out."""
    parts = []
    for place in PLACES:
        per_destination = counts.get(place) or {}
        listed = ", ".join(f"{name} {n}" for name, n in sorted(per_destination.items()) if n)
        if listed:
            parts.append(f"{place.replace('_', ' ')} {listed}")
    return "; ".join(parts) or "nothing"


@click.command(
    epilog="""\b
Examples:
  conversion-relay erase --email anna@example.com            (a dry run: says what and where)
  conversion-relay erase --email anna@example.com --yes
  conversion-relay erase --phone '+49 170 1234567' --external-id u-1842 --yes --origin dsr-2024-118"""
)
@click.option("--email", metavar="ADDRESS", help="The person's e-mail address (or its SHA-256 digest).")
@click.option("--phone", metavar="NUMBER", help="The person's phone number, read in relay.default_phone_region.")
@click.option("--external-id", metavar="ID", help="The person's id in the shop (the events' external_id).")
@click.option("--origin", metavar="REF", help="Where the request comes from, for the audit line (a ticket id).")
@click.option("--yes", is_flag=True, help="Do it. Without --yes only what would be removed is printed.")
def erase(email: str | None, phone: str | None, external_id: str | None, origin: str | None, yes: bool) -> int:
    """Remove every stored event of one person from streams, waiting batches and dead letters.

    An event matching any identifier given is the person's. Events already delivered are the
    vendors' to erase; a request in flight at that moment may still arrive (see the operations
    guide, "Erasure").
    """
    from conversion_relay.ops.admin import Admin
    from conversion_relay.store.deadletter import InvalidSelection

    if not (email or phone or external_id):
        raise CliError("erase needs --email, --phone or --external-id (any combination).", EXIT_USAGE)
    who: dict[str, Any] = {"email": email, "phone": phone, "external_id": external_id}
    source = origin or f"cli {getpass.getuser()}@{socket.gethostname()}"
    settings = load()
    with redis_session(settings) as client:
        admin = Admin(settings, client)
        try:
            preview = admin.erase(**who, dry_run=True, origin=source)
            if not preview["events_found"]:
                click.echo("Nothing to erase: no stored event matches.")
                return 0
            if not yes:
                click.echo(
                    f"Would erase {preview['events_found']} events ({erase_summary(preview['found'])}). "
                    "Run again with --yes to do it."
                )
                return 0
            with progress("Searching", unit="entry") as advance:
                result = admin.erase(**who, dry_run=False, origin=source, progress=advance)
        except InvalidSelection as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    click.echo(f"Erased {result['events_removed']} events ({erase_summary(result['removed'])}).")
    if result["drains_stopped"]:
        click.echo(f"Stopped {result['drains_stopped']} drains that held them; their partitions resume at once.")
    return 0
