"""The benchmark's outputs: a table on stdout, JSON files and a throughput chart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: (key, label, unit) of every figure in the table, in order.
ROWS = (
    ("enqueue_p50_ms", "enqueue one event, p50 (worker idle, median)", "ms"),
    ("enqueue_p99_ms", "enqueue one event, p99 (worker idle, median)", "ms"),
    ("producer_p50_ms", "enqueue one event, p50 (2 producers, full load)", "ms"),
    ("naive_delay_p50_ms", "naive: validate + delay(), p50 (full load)", "ms"),
    ("single_events_per_s", "relay, single-event enqueues, 2 producers", "events/s"),
    ("naive_events_per_s", "naive, single-event enqueues, 2 producers", "events/s"),
    ("bulk_events_per_s", "relay, bulk enqueues of 1,000, 1 producer", "events/s"),
    ("naive_bulk_events_per_s", "naive, bulk enqueues of 1,000, 1 producer", "events/s"),
    ("validation_only_events_per_s", "marshmallow validation alone, 1 process", "events/s"),
    ("fanout_events_per_s", "relay, bulk, fanned out to every destination", "events/s"),
    ("backlog_drain_events_per_s", "relay draining the backlog (memory run)", "events/s"),
    ("worker_peak_rss_mb", "worker peak RSS, largest process", "MB"),
    ("worker_tree_peak_rss_mb", "worker peak RSS, all processes", "MB"),
)
RATIOS = (
    ("single_ratio_vs_naive", "relay / naive, single events", 10.0, "≥"),
    ("bulk_ratio_vs_validation", "relay bulk / validation alone", 0.70, "≥"),
)


def table(results: dict[str, Any]) -> str:
    lines = [f"{'figure':48} {'value':>12}  unit", "-" * 72]
    for key, label, unit in ROWS:
        if key in results:
            value = results[key]
            shown = f"{value:,.0f}" if unit == "events/s" else f"{value:,.2f}"
            lines.append(f"{label:48} {shown:>12}  {unit}")
    lines.append("")
    for key, label, target, sign in RATIOS:
        if key in results:
            verdict = "met" if results[key] >= target else "MISSED"
            lines.append(f"{label:48} {results[key]:>12.2f}  target {sign} {target:g}: {verdict}")
    for key, label, target in (("enqueue_p99_ms", "enqueue p99", 1.0), ("worker_peak_rss_mb", "worker RSS", 200.0)):
        if key in results:
            verdict = "met" if results[key] < target else "MISSED"
            lines.append(f"{label:48} {results[key]:>12.2f}  target < {target:g}: {verdict}")
    cpu = results.get("single_cpu_us_per_event")
    if cpu:
        parts = ", ".join(f"{name} {value:.0f}" for name, value in sorted(cpu.items(), key=lambda kv: -kv[1]))
        lines.append(f"{'CPU per event, relay single-event run (µs)':48} {sum(cpu.values()):>12.0f}  ({parts})")
    machine = results.get("machine", {})
    lines.append("")
    lines.append(
        f"machine: {machine.get('cores')} cores, Python {machine.get('python')}, Redis {machine.get('redis')}; "
        f"{results.get('started_at', '')}"
    )
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = out / f"bench-{stamp}.json"
    text = json.dumps(results, indent=2) + "\n"
    path.write_text(text)
    (out / "latest.json").write_text(text)
    (out / "latest.txt").write_text(table(results) + "\n")
    return path


def chart(timelines: dict[str, list[list[float]]], path: Path) -> Path | None:
    """Delivery rate and delivered events over time at the sink, one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (rate, total) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for label, timeline in timelines.items():
        if not timeline:
            continue
        bucket = timeline[1][0] - timeline[0][0] if len(timeline) > 1 else 0.25
        xs = [t for t, _ in timeline]
        counts = [n for _, n in timeline]
        rate.plot(xs, [n / bucket for n in _smooth(counts, int(2 / bucket))], label=label, linewidth=1.6)
        running, cumulative = 0, []
        for n in counts:
            running += n
            cumulative.append(running)
        total.plot(xs, cumulative, label=label, linewidth=1.6)
    rate.set_ylabel("events/s delivered (2 s moving average)")
    total.set_ylabel("events delivered")
    for ax in (rate, total):
        ax.set_xlabel("seconds since the first event reached the sink")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Single-event enqueues from 2 producers, end to end: conversion-relay vs a naive relay")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _smooth(values: list[int], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out
