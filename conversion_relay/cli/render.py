"""Text the commands print: the status report and the dead-letter table.

Kept apart from the commands so that what an operator reads is in one place; nothing here
prints an event or a key, only names, counts, reasons, ids and times.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from conversion_relay.store.stats import Counter


def when(seconds: float | None) -> str:
    """A UNIX time as UTC for tables, ``-`` for none."""
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def letters_table(rows: list[dict[str, Any]]) -> str:
    """Dead-letter summaries, one a line under a header."""
    lines = [
        f"{'id':32}  {'destination':12}  {'reason':24}  {'status':6}  {'events':6}  {'attempts':8}  last failure (UTC)"
    ]
    for row in rows:
        lines.append(
            f"{row['id']:32}  {row['destination']:12}  {row['reason']:24}  {str(row['status'] or '-'):6}  "
            f"{row['events']:6}  {row['attempts']:8}  {when(row['last_failed_at'])}"
        )
    return "\n".join(lines)


def status_table(report: dict[str, Any]) -> str:
    """``Admin.status()`` as a few lines per destination."""
    lines = []
    for name, info in report.items():
        c = info["counters"]
        lines.append(
            f"{name} ({info['vendor']}): accepted {c[Counter.ACCEPTED]}, delivered {c[Counter.DELIVERED]}, "
            f"duplicate {c[Counter.DUPLICATE]}, skipped {c[Counter.SKIPPED]}, retried {c[Counter.RETRIED]}, "
            f"dead-lettered {c[Counter.DEAD_LETTERED]}"
        )
        if info.get("skipped_by_reason"):
            reasons = ", ".join(f"{reason} {n}" for reason, n in info["skipped_by_reason"].items())
            lines.append(f"  skipped: {reasons}")
        backlog = info["backlog"]
        lines.append(
            f"  backlog: {backlog['unread']} unread, {backlog['pending']} in flight; "
            f"{info['waiting_batches']} waiting batches; {info['dead_letters']} dead letters"
        )
        if info.get("failing"):
            run = info["failing"]
            lines.append(f"  failing: {run['failures']} transient failures in a row since {when(run['since'])}")
        if info["backing_off_until"]:
            lines.append(f"  backing off until {when(info['backing_off_until'])}")
        for batch in info["waiting"]:
            lines.append(
                f"  waiting {batch['id']}: {batch['events']} events, attempt {batch['attempts']}, "
                f"next at {when(batch['next_attempt_at'])}, last: {batch['last_reason']}"
            )
    return "\n".join(lines)


def change_summary(result: dict[str, Any]) -> str:
    """``12 dead letters (40 events)`` from a replay or purge result."""
    return f"{result['entries']} dead letters ({result['events']} events)"
