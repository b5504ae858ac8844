"""The fault scenarios, each at two scales: ``full`` (``make chaos``) and ``short`` (``make test``).

A scenario names its destinations (vendor and sandbox mount) and a fault script; a scale says
how many events arrive how fast, the fault's timings, and the relay settings.  Full runs use the
engine's default settings (production behaviour: lease and reclaim times, back-off, timeouts)
unless the fault needs one changed; short runs use short timings throughout so that every
scenario finishes in seconds.  Progress points (``at``) are fractions of the events enqueued.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.chaos.runner import Context

GRAVITY = {"gravity": ("gravity_capi", "gravity-capi")}
RECO = {"reco": ("gravity_reco", "gravity-reco")}
HEALTHY_AND_DOWN = {"gravity": ("gravity_capi", "gravity-capi"), "tracify": ("tracify", "tracify")}

#: Full runs: the engine's defaults.
FULL_RELAY: dict[str, Any] = {}
#: Short runs: everything quick.  ``reclaim_idle_seconds`` (the committed engine) and
#: ``lease_seconds`` (the rewrite) are both given; the engine refusing one of them drops it.
SHORT_RELAY: dict[str, Any] = {
    "flush_deadline_seconds": 0.2,
    "tick_seconds": 0.05,
    "reclaim_idle_seconds": 4.0,
    "lease_seconds": 2.0,
    "drain_budget_seconds": 5.0,
    "visibility_timeout_seconds": 30.0,
    "backoff_base_seconds": 0.1,
    "backoff_cap_seconds": 2.0,
}
SHORT_DESTINATION = {"connect_timeout_seconds": 1.0, "read_timeout_seconds": 2.0}
#: The short SIGKILL run keeps the engine's own lease and reclaim times: how long a dead drain
#: holds its destination is what that scenario is about.
SHORT_RELAY_DEFAULT_LEASE = {k: v for k, v in SHORT_RELAY.items() if k not in ("reclaim_idle_seconds", "lease_seconds")}

#: Full-length load scenarios: events, and the rate they arrive at (events/s).
FULL_EVENTS = 20_000
FULL_RATE = 500.0
SHORT_EVENTS = 600
SHORT_RATE = 150.0


@dataclass(frozen=True)
class Scale:
    events: int
    rate: float
    timings: Mapping[str, Any]
    per_call: int = 20
    relay: Mapping[str, Any] = field(default_factory=lambda: dict(FULL_RELAY))
    #: Destination overrides by name; ``"*"`` applies to every destination.
    destination: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Latency of each sandbox mount outside the fault (so requests are in flight when killed).
    latency: Mapping[str, float] = field(default_factory=dict)
    workers: int = 2
    concurrency: int = 2
    #: One enqueue call per destination, so a full destination can refuse alone.
    separately: bool = False
    maxmemory_mb: int | None = None
    #: From the first event until the scenario is given up as not settling.
    settle_timeout: float = 240.0

    def describe(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "rate_per_s": self.rate,
            "per_call": self.per_call,
            "timings": dict(self.timings),
            "relay": dict(self.relay),
            "destination": {k: dict(v) for k, v in self.destination.items()},
            "latency": dict(self.latency),
            "workers": f"{self.workers} x concurrency {self.concurrency}",
            "maxmemory_mb": self.maxmemory_mb,
        }


def short(timings: Mapping[str, Any], **kw: Any) -> Scale:
    kw.setdefault("relay", SHORT_RELAY)
    kw.setdefault("destination", {"*": SHORT_DESTINATION})
    kw.setdefault("settle_timeout", 45.0)
    return Scale(kw.pop("events", SHORT_EVENTS), kw.pop("rate", SHORT_RATE), timings, **kw)


def full(timings: Mapping[str, Any], **kw: Any) -> Scale:
    return Scale(kw.pop("events", FULL_EVENTS), kw.pop("rate", FULL_RATE), timings, **kw)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    destinations: Mapping[str, tuple[str, str]]
    fault: Callable[[Context, Mapping[str, Any]], None]
    full: Scale
    short: Scale
    #: Destinations the fault is not aimed at: they must take every event and never stall.
    healthy: tuple[str, ...] = ()

    def scale(self, name: str, events: int | None = None) -> Scale:
        chosen = self.full if name == "full" else self.short
        return dataclasses.replace(chosen, events=events) if events else chosen


def _stop_workers(how: str) -> Callable[[Context, Mapping[str, Any]], None]:
    def fault(ctx: Context, t: Mapping[str, Any]) -> None:
        for point in t["at"]:
            ctx.at(point)
            ctx.stop_worker(next(iter(ctx.scenario.destinations)), how)

    return fault


def redis_restart(ctx: Context, t: Mapping[str, Any]) -> None:
    for point in t["at"]:
        ctx.at(point)
        ctx.redis_outage(t["down_s"])


def vendor_503_then_429(ctx: Context, t: Mapping[str, Any]) -> None:
    ctx.at(t["at"])
    ctx.vendor.configure("gravity-capi", fail_all_status=503)
    ctx.note(f"vendor answers 503 for {t['outage_s']} s")
    time.sleep(t["outage_s"])
    too_many = [{"status": 429, "retry_after": t["retry_after_s"]}] * t["n_429"]
    ctx.vendor.configure("gravity-capi", fail_all_status=None, statuses=too_many)
    ctx.note(f"vendor answers the next {t['n_429']} requests 429, Retry-After {t['retry_after_s']} s")


def vendor_hang(ctx: Context, t: Mapping[str, Any]) -> None:
    ctx.at(t["at"])
    ctx.vendor.configure("gravity-capi", latency_seconds=t["latency_s"])
    ctx.note(f"vendor answers after {t['latency_s']} s (past the read timeout) for {t['hang_s']} s")
    time.sleep(t["hang_s"])
    ctx.vendor.configure("gravity-capi", latency_seconds=ctx.scale.latency.get("gravity-capi", 0.0))
    ctx.note("vendor answers promptly again")


def vendor_drops(ctx: Context, t: Mapping[str, Any]) -> None:
    for point in t["at"]:
        ctx.at(point)
        ctx.vendor.configure("gravity-capi", drop_connections=t["drops"])
        ctx.note(f"vendor closes the next {t['drops']} connections unanswered")


def reco_splits(ctx: Context, t: Mapping[str, Any]) -> None:
    for point in t["at"]:
        ctx.at(point)
        ctx.vendor.configure("gravity-reco", statuses=[400] * t["burst"])
        ctx.note(f"RECO refuses the next {t['burst']} requests whole (400): the relay splits")


def redis_full(ctx: Context, t: Mapping[str, Any]) -> None:
    ctx.vendor.configure("tracify", fail_all_status=503)
    ctx.note("tracify down (503); gravity healthy")
    ctx.at(1.0)
    time.sleep(t["down_after_s"])
    ctx.vendor.configure("tracify", fail_all_status=None)
    ctx.note("tracify back up")


KILLS_FULL = {"at": [0.15, 0.35, 0.55, 0.75]}
KILLS_SHORT = {"at": [0.3, 0.7]}
TERMS_FULL = {"at": [0.25, 0.6]}
TERMS_SHORT = {"at": [0.4]}
LATENCY = {"gravity-capi": 0.3}
#: RECO: a slow vendor (5 s a request) without dedup, refusing bursts of requests whole: each
#: drain splits its chunk down several levels, one slow request after another.
RECO_SLOW = {"gravity-reco": 5.0}
RECO_SLOW_SHORT = {"gravity-reco": 0.6}
#: The full-Redis run: a cap on the down destination below what fits in maxmemory, for the engine
#: that has one (the healthy destination keeps the default: its backlog never builds up).
FULL_REDIS_CAP = {"max_backlog_events": 6_000}
SHORT_REDIS_CAP = {"max_backlog_events": 1_000}


def _reco(parallel: int) -> dict[str, Any]:
    return dict(
        destinations=RECO,
        fault=reco_splits,
        full=full(
            {"at": [0.05, 0.5], "burst": 8 * parallel},
            events=3_000,
            rate=200.0,
            latency=RECO_SLOW,
            destination={"reco": {"parallel_drains": parallel}},
            concurrency=parallel + 1,
            settle_timeout=300.0,
        ),
        short=short(
            {"at": [0.1, 0.5], "burst": 3 * parallel},
            events=400,
            rate=400.0,
            latency=RECO_SLOW_SHORT,
            destination={"*": SHORT_DESTINATION, "reco": {"parallel_drains": parallel}},
            concurrency=parallel + 1,
        ),
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        "sigkill_workers",
        "SIGKILL of the draining worker, 4 times under load (2 workers)",
        GRAVITY,
        _stop_workers("sigkill"),
        full(KILLS_FULL, latency=LATENCY),
        short(KILLS_SHORT, latency=LATENCY, relay=SHORT_RELAY_DEFAULT_LEASE, settle_timeout=100.0),
    ),
    Scenario(
        "sigterm_main",
        "SIGTERM to the draining worker's main process (warm shutdown), twice",
        GRAVITY,
        _stop_workers("sigterm-main"),
        full(TERMS_FULL, latency=LATENCY),
        short(TERMS_SHORT, latency=LATENCY),
    ),
    Scenario(
        "sigterm_group",
        "SIGTERM to the draining worker's whole process group, twice",
        GRAVITY,
        _stop_workers("sigterm-group"),
        full(TERMS_FULL, latency=LATENCY),
        short(TERMS_SHORT, latency=LATENCY),
    ),
    Scenario(
        "redis_restart",
        "redis-server SIGKILLed and restarted from its AOF, twice (5 s down)",
        GRAVITY,
        redis_restart,
        full({"at": [0.3, 0.65], "down_s": 5.0}, latency=LATENCY),
        short({"at": [0.4], "down_s": 2.0}, latency=LATENCY),
    ),
    Scenario(
        "vendor_503_then_429",
        "vendor answers 503 for 20 s, then 429 with Retry-After to the next 6 requests",
        GRAVITY,
        vendor_503_then_429,
        full({"at": 0.2, "outage_s": 20.0, "retry_after_s": 5, "n_429": 6}),
        short({"at": 0.3, "outage_s": 3.0, "retry_after_s": 1, "n_429": 4}),
    ),
    Scenario(
        "vendor_hang",
        "vendor answers after 6 s, past the 3 s read timeout, for 20 s",
        GRAVITY,
        vendor_hang,
        full({"at": 0.3, "latency_s": 6.0, "hang_s": 20.0}, destination={"gravity": {"read_timeout_seconds": 3.0}}),
        short(
            {"at": 0.3, "latency_s": 2.0, "hang_s": 3.0},
            destination={"gravity": {"connect_timeout_seconds": 1.0, "read_timeout_seconds": 1.0}},
        ),
    ),
    Scenario(
        "vendor_drops",
        "vendor closes connections unanswered, 4 bursts of 4",
        GRAVITY,
        vendor_drops,
        full({"at": [0.2, 0.4, 0.6, 0.8], "drops": 4}, latency=LATENCY),
        short({"at": [0.3, 0.7], "drops": 3}, latency=LATENCY),
    ),
    Scenario(
        "reco_splits_p2",
        "slow RECO (no dedup), bursts of whole-request 400s that split, parallel_drains 2",
        **_reco(2),
    ),
    Scenario(
        "reco_splits_p4",
        "slow RECO (no dedup), bursts of whole-request 400s that split, parallel_drains 4",
        **_reco(4),
    ),
    Scenario(
        "redis_full",
        "Redis at maxmemory (noeviction): tracify down until the load ends, gravity healthy",
        HEALTHY_AND_DOWN,
        redis_full,
        full(
            {"down_after_s": 10.0},
            events=20_000,
            rate=1_000.0,
            per_call=50,
            separately=True,
            maxmemory_mb=10,
            destination={"tracify": FULL_REDIS_CAP},
            concurrency=3,
            settle_timeout=200.0,
        ),
        short(
            {"down_after_s": 2.0},
            events=10_000,
            rate=4_000.0,
            per_call=50,
            separately=True,
            maxmemory_mb=6,
            destination={"*": SHORT_DESTINATION, "tracify": SHORT_REDIS_CAP},
            concurrency=3,
            settle_timeout=45.0,
        ),
        healthy=("gravity",),
    ),
]

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
