"""The chaos results as JSON (``bench/results/chaos.json``) and as a table for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = (
    ("scenario", "scenario", 20),
    ("accepted", "accepted", 8),
    ("refused", "refused", 7),
    ("delivered", "delivered", 9),
    ("dead_lettered", "dead", 5),
    ("duplicated", "dup", 5),
    ("duplicated_ambiguous", "dup(amb)", 8),
    ("lost", "lost", 5),
    ("stall_s", "stall_s", 7),
    ("workers_exited", "exited", 6),
    ("duration_s", "dur_s", 6),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: list[dict[str, Any]]) -> str:
    head = "  ".join(f"{title:>{width}}" if i else f"{title:<{width}}" for i, (_, title, width) in enumerate(COLUMNS))
    lines = [head + "  verdict", "-" * (len(head) + 30)]
    for result in results:
        if "error" in result:
            lines.append(f"{result['scenario']:<20}  ERROR {result['error'][:100]}")
            continue
        cells = [
            f"{_cell(result.get(key)):>{width}}" if i else f"{_cell(result.get(key)):<{width}}"
            for i, (key, _, width) in enumerate(COLUMNS)
        ]
        failed = [name for name, ok in result.get("invariants", {}).items() if not ok]
        lines.append("  ".join(cells) + "  " + ("ok" if not failed else "FAILS " + ", ".join(failed)))
    lines.append("")
    lines.append("dup(amb): duplicates of events whose request the vendor answered after the relay's timeout,")
    lines.append("or that were in flight when a worker or Redis was killed (outcome unknowable to the relay).")
    for result in results:
        for note in result.get("notes", []):
            lines.append(f"{result['scenario']}: {note}")
    return "\n".join(lines)


def write(results: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    path.with_suffix(".txt").write_text(table(results) + "\n")
    return path
