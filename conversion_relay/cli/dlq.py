"""``conversion-relay dlq``: list, show, export, replay and purge dead letters.

Replay and purge change what the store holds, so they never act on a selection the operator did
not make (ids, a filter or ``--all``), always say how much they touch first, and act only with
``--yes``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from conversion_relay.cli.base import EXIT_USAGE, CliError, Limit, ReasonName, When, load, redis_session
from conversion_relay.cli.progress import progress
from conversion_relay.cli.render import change_summary, letters_table, when
from conversion_relay.outcomes import REASONS_HELP

if TYPE_CHECKING:
    from conversion_relay.ops.admin import Admin
    from conversion_relay.store.deadletter import Selection


def filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that select dead letters, shared by every subcommand but ``show``; a time
    range that selects nothing is refused before Redis is asked."""

    @functools.wraps(command)
    def checked(*args: Any, **chosen: Any) -> Any:
        since, until = chosen["since"], chosen["until"]
        if since is not None and until is not None and since > until:
            raise CliError(
                f"--since ({when(since)} UTC) is after --until ({when(until)} UTC); swap them, or drop one.",
                EXIT_USAGE,
            )
        return command(*args, **chosen)

    options = [
        click.option("--destination", metavar="NAME", help="Only dead letters of this destination."),
        click.option("--reason", type=ReasonName(), metavar="REASON", help=f"Only this reason: {REASONS_HELP}."),
        click.option(
            "--since",
            type=When(),
            metavar="TIME",
            help="Last failure at or after TIME: ISO 8601, UNIX seconds or an age (30m, 2h, 7d).",
        ),
        click.option("--until", type=When(), metavar="TIME", help="Last failure at or before TIME (as --since)."),
        click.option("--limit", type=Limit(), metavar="N", help="At most N entries (1 or more), oldest first."),
    ]
    for option in reversed(options):
        checked = option(checked)
    return checked


@click.group(
    epilog="""\b
Examples:
  conversion-relay dlq list --destination gravity --since 2h
  conversion-relay dlq replay --reason http_401 --yes"""
)
def dlq() -> None:
    """Inspect, export, replay and purge dead letters.

    A dead letter is what a destination refused for good, with the reason, status, a response
    excerpt, the attempts and the events, kept until replayed or purged.
    """


@contextmanager
def _admin() -> Iterator[Admin]:
    from conversion_relay.ops.admin import Admin

    settings = load()
    with redis_session(settings) as client:
        yield Admin(settings, client)


@contextmanager
def _refusals() -> Iterator[None]:
    """The admin layer's own refusals (conversion_relay/store/selection.py) as one line and exit status 2; the
    options are checked here first, so these are a second line of defence."""
    from conversion_relay.store.deadletter import InvalidSelection

    try:
        yield
    except InvalidSelection as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _selection(admin: Admin, ids: tuple[str, ...] = (), everything: bool = False, **chosen: Any) -> Selection:
    """The selection the options make, after checking that ``--destination`` names one."""
    from conversion_relay.store.deadletter import Selection

    name = chosen["destination"]
    configured = admin.settings.destinations
    # A destination removed from the configuration may still have dead letters; those stay reachable.
    if name is not None and name not in configured and not admin.letters.count(name):
        known = ", ".join(sorted(configured)) or "none"
        raise CliError(
            f"--destination: {name!r} is not configured (configured: {known}); check the spelling.", EXIT_USAGE
        )
    with _refusals():
        return Selection(ids=ids, everything=everything, **chosen)


@dlq.command(
    "list",
    epilog="""\b
Examples:
  conversion-relay dlq list
  conversion-relay dlq list --destination gravity --reason http_400 --since 2h --limit 20""",
)
@filters
def list_letters(**chosen: Any) -> int:
    """List matching dead letters, oldest first: id, destination, reason, status, events, attempts."""
    with _admin() as admin:
        rows = admin.list(_selection(admin, **chosen))
    click.echo(letters_table(rows) if rows else "No dead letters match.")
    return 0


@dlq.command(
    epilog="""\b
Example:
  conversion-relay dlq show 3f2c9a0b5d1e4f60a7b8c9d0e1f2a3b4"""
)
@click.argument("entry_id", metavar="ID")
def show(entry_id: str) -> int:
    """One dead letter as JSON: reason, status, response excerpt, attempts and its events."""
    with _admin() as admin:
        entry = admin.show(entry_id)
    if entry is None:
        raise CliError(f"no dead letter with id {entry_id!r}; 'conversion-relay dlq list' shows the ids.")
    click.echo(json.dumps(entry, indent=2, ensure_ascii=False))
    return 0


@dlq.command(
    epilog="""\b
Examples:
  conversion-relay dlq export --reason http_400 -o rejected.jsonl
  conversion-relay dlq export --destination reco | jq .reason"""
)
@filters
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (replaced if it exists). Default: standard output.")
def export(output: str | None, **chosen: Any) -> int:
    """Write matching dead letters as JSON lines, events decoded, oldest first."""
    if output:
        _check_folder(output)
    with _admin() as admin:
        selection = _selection(admin, **chosen)
        if not output:
            admin.export(selection, sys.stdout)
            return 0
        try:
            out = open(output, "w", encoding="utf-8")
        except OSError as exc:
            raise CliError(
                f"-o/--output: cannot write {output!r} ({exc.strerror}); choose a file you may write.", EXIT_USAGE
            ) from None
        with out, progress("Exporting", unit="letter") as advance:
            count = admin.export(selection, out, progress=advance)
    click.echo(f"Wrote {count} dead letters to {output}.", err=True)
    return 0


def _check_folder(output: str) -> None:
    """Refuse an output file in a folder that does not exist, before Redis is even asked."""
    folder = Path(output).parent
    if not folder.is_dir():
        raise CliError(
            f"-o/--output: the folder {str(folder)!r} does not exist; create it first, or write elsewhere.",
            EXIT_USAGE,
        )


_CHANGES = {
    "replay": (
        "Replaying",
        "Replayed",
        "Each goes back to its destination, due now; one that fails again returns to the store.",
    ),
    "purge": ("Purging", "Purged", "Purged entries and their events are gone for good."),
}


def _change_command(action: str) -> click.Command:
    """``replay`` or ``purge``: the same guards, a different operation."""
    doing, done, effect = _CHANGES[action]

    @click.command(
        action,
        help=f"{action.capitalize()} matching dead letters; a dry run unless --yes.\n\n{effect} "
        "Select them by ID, by filters, or with --all.",
        epilog=f"""\b
Examples:
  conversion-relay dlq {action} --reason http_401          (a dry run: says how many)
  conversion-relay dlq {action} --reason http_401 --yes
  conversion-relay dlq {action} 3f2c9a0b5d1e4f60a7b8c9d0e1f2a3b4 --yes
  conversion-relay dlq {action} --all --yes""",
    )
    @click.argument("ids", nargs=-1, metavar="[ID]...")
    @filters
    @click.option("--all", "everything", is_flag=True, help="Select every dead letter (with filters: every match).")
    @click.option("--yes", is_flag=True, help="Do it. Without --yes only the count is printed (a dry run).")
    def command(ids: tuple[str, ...], everything: bool, yes: bool, **chosen: Any) -> int:
        if ids and everything:
            raise CliError("give dead-letter ids or --all, not both.", EXIT_USAGE)
        chose = ids or any(chosen[name] is not None for name in ("destination", "reason", "since", "until"))
        if not (chose or everything):
            raise CliError(
                f"{action} needs a selection: give dead-letter ids, a filter (--destination, --reason, "
                "--since, --until), or --all for every entry.",
                EXIT_USAGE,
            )
        with _admin() as admin, _refusals():
            selection = _selection(admin, ids, everything, **chosen)
            operation = functools.partial(admin.replay if action == "replay" else admin.purge, origin="cli")
            preview = operation(selection, dry_run=True)
            if not preview["entries"]:
                click.echo("Nothing to do: no dead letters match.")
                return 0
            if not yes:
                click.echo(f"Would {action} {change_summary(preview)}. Run again with --yes to do it.")
                return 0
            click.echo(f"{doing} {change_summary(preview)}...")
            with progress(doing, total=preview["entries"], unit="letter") as advance:
                result = operation(selection, dry_run=False, progress=advance)
        click.echo(f"{done} {result['done']} of {change_summary(result)}.")
        missing = result["entries"] - result["done"]
        if missing:
            click.echo(f"{missing} were gone before they could be touched (replayed or purged meanwhile).")
        return 0

    return command


dlq.add_command(_change_command("replay"))
dlq.add_command(_change_command("purge"))
