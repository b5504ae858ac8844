"""Short versions of the chaos scenarios: ``make chaos`` runs the same ones at full length.

Each scenario runs once (a few hundred events, short timings, its own redis-server, counting
sandbox and Celery workers, see ``bench/chaos``); then each invariant of the issue is its own
test, so that one failing invariant does not hide the others:

- ``completes``: the run itself worked (no harness error);
- ``lost_0``: every accepted event was delivered or dead-lettered;
- ``workers_exited_0``: no worker main process exited that the scenario did not signal;
- ``stall_le_15``: no stretch over 15 s with a backlog and no request to the vendor;
- ``no_unexplained_duplicates``: a copy at the vendor only where the relay could not know the
  outcome of a request (answered after its timeout, or in flight when a worker or Redis died);
- ``settled``: nothing unread, in flight or waiting at the end;
- ``healthy_unaffected`` (full Redis): the healthy destination took every event and refused none.

Before the engine of issue 7 (commit 494c128) these failed: the SIGKILL stall, the Redis
restart's worker exit, duplicates at RECO with two and four drains, and everything of the full
Redis (see ``bench/results/chaos-before.json``).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.chaos import runner
from bench.chaos.scenarios import BY_NAME, SCENARIOS

pytestmark = pytest.mark.chaos

INVARIANTS = ("completes", "lost_0", "workers_exited_0", "stall_le_15", "no_unexplained_duplicates", "settled")

_results: dict[str, dict[str, Any]] = {}


def result_of(name: str) -> dict[str, Any]:
    if name not in _results:
        _results[name] = runner.run(BY_NAME[name], "short")
    return _results[name]


def _cases() -> list[Any]:
    cases = []
    for scenario in SCENARIOS:
        names = INVARIANTS + (("healthy_unaffected",) if scenario.healthy else ())
        for invariant in names:
            cases.append(pytest.param(scenario.name, invariant, id=f"{scenario.name}-{invariant}"))
    return cases


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("scenario", "invariant"), _cases())
def test_chaos_short(scenario: str, invariant: str) -> None:
    result = result_of(scenario)
    assert "error" not in result, result.get("traceback", result.get("error"))
    if invariant == "completes":
        assert result["accepted"] > 0
        return
    figures = {k: result.get(k) for k in ("accepted", "delivered", "dead_lettered", "lost", "duplicated")}
    figures.update(
        stall_s=result["stall_s"],
        unexplained=result["duplicated_unexplained"],
        exits=[(e["exit_code"], e["log_tail"][-300:]) for e in result["exits"]],
        notes=result["notes"],
    )
    assert result["invariants"][invariant], f"{scenario}: {invariant} does not hold: {figures}"


def test_every_scenario_has_a_short_version() -> None:
    for scenario in SCENARIOS:
        assert scenario.short.events <= 10_000 and scenario.short.settle_timeout <= 100, scenario.name
