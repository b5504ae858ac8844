"""Enqueue latency with an idle worker, as ``make bench`` measures it, for any checkout.

    cd ROOT && PYTHONPATH=ROOT python bench/latency.py ROOT

``ROOT`` is a checkout of this repository, so two trees can be compared back to back on the
same machine: absolute latencies on a shared 2-core VM drift through the day, a comparison
made minutes apart does not.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path


def main(root: str, runs: int = 3) -> None:
    sys.path.insert(0, root)
    from bench import harness, workloads
    from conversion_relay.embedded import EmbeddedRedis

    workdir = Path(tempfile.mkdtemp(prefix="cr-latency-"))
    with EmbeddedRedis(workdir / "redis") as server:
        sink = harness.Sink()
        env = harness.relay_env(server, sink, workdir)
        env["PYTHONPATH"] = root
        worker = harness.start_relay_worker(env, workdir)
        try:
            for _ in range(runs):
                sink.reset()
                run = workloads.producers("relay", "single", env, 3000, 1, pace=0.002, destinations=["gravity"])
                _, reports = run.run()
                latencies = sorted(reports[0]["latencies"])
                p50 = statistics.median(latencies) * 1000
                p99 = latencies[int(len(latencies) * 0.99)] * 1000
                print(f"p50 {p50:.2f} ms  p99 {p99:.2f} ms", flush=True)
                sink.wait_for(3000, 60, vendor="gravity_capi")
        finally:
            worker.stop()
            sink.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
