"""``make bench`` keeps working: a small run writes every figure the README and the issue name.

Figures are not checked against targets here (tests never assert timings); only that they exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REQUIRED = {
    "single_events_per_s",
    "naive_events_per_s",
    "single_ratio_vs_naive",
    "bulk_events_per_s",
    "validation_only_events_per_s",
    "bulk_ratio_vs_validation",
    "enqueue_p50_ms",
    "enqueue_p99_ms",
    "worker_peak_rss_mb",
    "machine",
}


def test_a_small_benchmark_run_writes_all_figures(tmp_path: Path):
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--events", "2000", "--naive-events", "200", "--backlog", "5000",
         "--fanout-events", "500", "--drain-seconds", "10", "--latency-events", "500", "--latency-runs", "2",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    latest = json.loads((out / "latest.json").read_text())
    assert REQUIRED <= set(latest)
    assert set(latest["machine"]) >= {"cores", "python", "redis"}
    assert latest["single_events_per_s"] > 0 and latest["naive_events_per_s"] > 0
    assert latest["backlog_drained_events"] > 0
    assert set(latest["fanout_by_vendor"]) == {"gravity_capi", "gravity_field", "tracify", "gravity_reco"}
    assert "relay / naive, single events" in run.stdout
    assert len(list(out.glob("bench-*.json"))) == 1
