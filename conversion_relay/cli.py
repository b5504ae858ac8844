"""The ``conversion-relay`` command.

    conversion-relay status                      counters, backlog, waiting batches
    conversion-relay check-config                load and check the configuration
    conversion-relay enqueue FILE [--destination D ...]          canonical events from JSON
    conversion-relay enqueue FILE --native D [--operation OP]    a vendor-native payload
    conversion-relay dlq list [filters]          dead letters, oldest first
    conversion-relay dlq show ID                 one dead letter with its events
    conversion-relay dlq export [filters] [-o F] JSON lines
    conversion-relay dlq replay (IDS | --all | filters) [--yes]
    conversion-relay dlq purge  (IDS | --all | filters) [--yes]
    conversion-relay worker [celery options]     run a worker
    conversion-relay sandbox [--port N]          run the local vendor sandboxes

Filters: ``--destination``, ``--reason``, ``--since``, ``--until`` (ISO 8601, UNIX seconds or
an age such as ``30m``, ``2h``, ``7d``) and ``--limit``.  ``replay`` and ``purge`` only report
what they would do unless given ``--yes``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import redis

from worker.errors import ConfigurationError

#: Exit status when Redis cannot be reached (1: refused or not found, 2: configuration or usage).
EXIT_REDIS_UNREACHABLE = 3

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """A point in time from ISO 8601, UNIX seconds or an age (``2h`` = two hours ago)."""
    current = time.time() if now is None else now
    age = _AGE.match(text.strip())
    if age:
        return current - float(age.group(1)) * _UNIT_SECONDS[age.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time; use ISO 8601 (2026-11-23T10:00:00Z), UNIX seconds or an age like 2h."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--destination", help="only this destination")
    parser.add_argument("--reason", help="only this reason, e.g. http_400 or retries_exhausted")
    parser.add_argument("--since", type=parse_when, help="last failure at or after this time")
    parser.add_argument("--until", type=parse_when, help="last failure at or before this time")
    parser.add_argument("--limit", type=int, help="at most this many entries")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conversion-relay", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="counters, backlog and waiting batches per destination")
    status.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("check-config", help="load and check the configuration")
    enqueue = commands.add_parser("enqueue", help="enqueue events from a JSON file ('-' for standard input)")
    enqueue.add_argument("file")
    enqueue.add_argument("--destination", action="append", help="a destination (repeat for more; default: all)")
    enqueue.add_argument("--native", metavar="DESTINATION", help="the file is a native payload for this destination")
    enqueue.add_argument("--operation", help="the vendor call a native payload is for (RECO: addItems, ...)")
    worker = commands.add_parser("worker", help="run a Celery worker", add_help=False)
    worker.add_argument("celery_args", nargs=argparse.REMAINDER)
    sandbox = commands.add_parser("sandbox", help="run the local vendor sandboxes")
    sandbox.add_argument("--port", type=int, default=8765)

    dlq = commands.add_parser("dlq", help="inspect, export, replay and purge dead letters")
    actions = dlq.add_subparsers(dest="action", required=True)
    _filters(actions.add_parser("list", help="list dead letters"))
    show = actions.add_parser("show", help="one dead letter with its events")
    show.add_argument("id")
    export = actions.add_parser("export", help="write dead letters as JSON lines")
    _filters(export)
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    for name in ("replay", "purge"):
        act = actions.add_parser(name, help=f"{name} dead letters (a dry run without --yes)")
        act.add_argument("ids", nargs="*", help="dead-letter ids")
        act.add_argument("--all", action="store_true", help="every dead letter matching the filters")
        act.add_argument("--yes", action="store_true", help="do it (without: only report)")
        _filters(act)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "worker.app", "worker", *args.celery_args])
    if args.command == "sandbox":
        from sandbox.__main__ import main as sandbox_main

        return sandbox_main(["--port", str(args.port)])
    try:
        return _run(args)
    except ConfigurationError as exc:
        print(f"conversion-relay: {exc}", file=sys.stderr)
        return 2


def redis_location(url: str) -> str:
    """Where a Redis URL points, for messages: ``host:port`` or the socket path, never credentials."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "a Unix socket"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:  # a port that is not a number, a broken IPv6 address
        return "the configured address"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _run(args: argparse.Namespace) -> int:
    from worker.settings import load_settings

    settings = load_settings()
    if args.command == "check-config":
        for dest in settings.destinations.values():
            state = "enabled" if dest.enabled else "disabled"
            print(f"{dest.name}: {dest.vendor} at {dest.base_url} ({state}; key from {dest.api_key_env})")
        return 0
    where = redis_location(settings.redis_url)
    try:
        return _run_with_redis(args, settings)
    except redis.AuthenticationError as exc:  # a ConnectionError to redis-py, but Redis is there
        print(
            f"conversion-relay: Redis at {where} refused the credentials ({type(exc).__name__}); check REDIS_URL.",
            file=sys.stderr,
        )
        return EXIT_REDIS_UNREACHABLE
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(
            f"conversion-relay: cannot reach Redis at {where} ({type(exc).__name__}); is it running? check REDIS_URL.",
            file=sys.stderr,
        )
        return EXIT_REDIS_UNREACHABLE


def _run_with_redis(args: argparse.Namespace, settings: Any) -> int:
    """The commands that need Redis; its connection errors are the caller's to report."""
    from worker.admin import Admin
    from worker.deadletter import Selection
    from worker.runtime import connect

    if args.command == "enqueue":
        return _enqueue(args, settings)
    client = connect(settings.redis_url)
    client.ping()  # before anything is written (dlq export -o would leave an empty file)
    admin = Admin(settings, client)
    if args.command == "status":
        report = admin.status()
        print(json.dumps(report, indent=2) if args.json else _status_table(report))
        return 0
    if args.action == "show":
        entry = admin.show(args.id)
        if entry is None:
            print(f"No dead letter with id {args.id}.", file=sys.stderr)
            return 1
        print(json.dumps(entry, indent=2, ensure_ascii=False))
        return 0
    selection = Selection(
        ids=tuple(getattr(args, "ids", ()) or ()),
        destination=args.destination,
        reason=args.reason,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    if args.action == "list":
        rows = admin.list(selection)
        print(_letters_table(rows) if rows else "No dead letters match.")
        return 0
    if args.action == "export":
        if args.output:
            with open(args.output, "w", encoding="utf-8") as out:
                count = admin.export(selection, out)
            print(f"Wrote {count} dead letters to {args.output}.", file=sys.stderr)
        else:
            admin.export(selection, sys.stdout)
        return 0
    if selection.is_everything and not args.all:
        print("Give dead-letter ids, filters, or --all to select every entry.", file=sys.stderr)
        return 2
    operation = admin.replay if args.action == "replay" else admin.purge
    result = operation(selection, dry_run=not args.yes)
    return _report_change(args.action, result)


def _enqueue(args: argparse.Namespace, settings: Any) -> int:
    from conversion_relay.jsonfile import parse_json
    from conversion_relay.producer import Relay
    from worker.errors import RelayError

    text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    try:
        payload = parse_json(text, args.file)
        with Relay(settings) as relay:
            # The producer turns Redis errors into EnqueueError; ask first, so that an
            # unreachable Redis is reported as for every other command.
            relay.redis.ping()
            if args.native:
                count = relay.enqueue_native(args.native, payload, operation=args.operation)
            else:
                count = len(relay.enqueue(payload, destinations=args.destination))
    except RelayError as exc:
        print(f"conversion-relay: {exc}", file=sys.stderr)
        return 1
    print(f"Enqueued {count} {'items' if args.native else 'events'}.")
    return 0


def _report_change(action: str, result: dict[str, Any]) -> int:
    if not result["entries"]:
        print("Nothing to do: no dead letters match.")
        return 0
    what = f"{result['entries']} dead letters ({result['events']} events)"
    if result["dry_run"]:
        print(f"Would {action} {what}. Run again with --yes to do it.")
    else:
        verb = "Replayed" if action == "replay" else "Purged"
        print(f"{verb} {result['done']} of {what}.")
        missing = result["entries"] - result["done"]
        if missing:
            print(f"{missing} were gone before they could be touched (replayed or purged meanwhile).")
    return 0


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _letters_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'id':32}  {'destination':12}  {'reason':24}  {'status':6}  {'events':6}  {'attempts':8}  last failure (UTC)"
    ]
    for row in rows:
        lines.append(
            f"{row['id']:32}  {row['destination']:12}  {row['reason']:24}  {str(row['status'] or '-'):6}  "
            f"{row['events']:6}  {row['attempts']:8}  {_when(row['last_failed_at'])}"
        )
    return "\n".join(lines)


def _status_table(report: dict[str, Any]) -> str:
    lines = []
    for name, info in report.items():
        c = info["counters"]
        lines.append(
            f"{name} ({info['vendor']}): accepted {c['accepted']}, delivered {c['delivered']}, "
            f"duplicate {c['duplicate']}, skipped {c['skipped']}, retried {c['retried']}, "
            f"dead-lettered {c['dead_lettered']}"
        )
        backlog = info["backlog"]
        lines.append(
            f"  backlog: {backlog['unread']} unread, {backlog['pending']} in flight; "
            f"{info['waiting_batches']} waiting batches; {info['dead_letters']} dead letters"
        )
        if info.get("failing"):
            run = info["failing"]
            lines.append(f"  failing: {run['failures']} transient failures in a row since {_when(run['since'])}")
        if info["backing_off_until"]:
            lines.append(f"  backing off until {_when(info['backing_off_until'])}")
        for batch in info["waiting"]:
            lines.append(
                f"  waiting {batch['id']}: {batch['events']} events, attempt {batch['attempts']}, "
                f"next at {_when(batch['next_attempt_at'])}, last: {batch['last_reason']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
