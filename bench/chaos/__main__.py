"""``make chaos``: every fault scenario at full length; writes ``bench/results/chaos.json``.

    python -m bench.chaos [--scenario NAME ...] [--events N] [--scale full|short] [--out FILE]

One object per scenario: ``scenario``, ``accepted``, ``refused``, ``delivered``,
``dead_lettered``, ``duplicated`` (extra copies at the vendor; ``duplicated_ambiguous`` of them
from requests whose outcome the relay could not know), ``lost``, ``stall_s``,
``workers_exited`` (not counting those the scenario killed), ``duration_s``, the invariants,
notes, and per-destination figures.  See bench/chaos/measure.py for how each is measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.chaos import report, runner
from bench.chaos.scenarios import BY_NAME, SCENARIOS

ROOT = Path(__file__).resolve().parent.parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(BY_NAME), help="run only this (repeatable)")
    parser.add_argument("--events", type=int, help="events per scenario instead of its default")
    parser.add_argument("--scale", choices=("full", "short"), default="full")
    parser.add_argument("--out", type=Path, help="default: bench/results/chaos.json (full runs of every scenario)")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's directory (logs, AOF)")
    args = parser.parse_args(argv)
    chosen = [BY_NAME[name] for name in args.scenario] if args.scenario else SCENARIOS
    partial = bool(args.scenario) or args.events or args.scale != "full"
    out = args.out or ROOT / "bench" / "results" / ("chaos-partial.json" if partial else "chaos.json")
    results = []
    started = time.time()
    for scenario in chosen:
        print(f"· {scenario.name}: {scenario.title}", flush=True)
        result = runner.run(scenario, args.scale, args.events, keep=args.keep)
        results.append(result)
        summary = {k: result.get(k) for k in ("accepted", "delivered", "lost", "duplicated", "stall_s", "duration_s")}
        print(f"  {result.get('error') or summary}", flush=True)
        report.write(results, out)
    print("\n" + report.table(results))
    print(f"\n{len(results)} scenarios in {time.time() - started:.0f} s; wrote {out} and {out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
