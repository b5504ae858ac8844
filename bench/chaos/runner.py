"""Run one scenario: start everything, load it, apply the fault, wait until settled, measure.

Every scenario gets its own redis-server (AOF under a temporary directory), its own counting
sandbox process and its own Celery workers, so nothing carries over from one to the next.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.chaos.config import compatible_settings, destination_table
from bench.chaos.load import Producer
from bench.chaos.measure import Sampler, Windows, destination_figures
from bench.chaos.processes import Managed, RedisProcess, VendorProcess, WorkerPool
from bench.chaos.scenarios import Scale, Scenario
from bench.harness import process_tree
from conversion_relay import Relay
from conversion_relay.ops.admin import Admin
from conversion_relay.store.connection import connect
from conversion_relay.store.deadletter import Selection

#: A scenario is settled when its backlog has read zero this many samples in a row.
SETTLED_SAMPLES = 5
STALL_LIMIT_SECONDS = 15.0


class Context:
    """What a scenario's fault script works with."""

    def __init__(self, scenario: Scenario, scale: Scale, redis: RedisProcess, vendor: VendorProcess) -> None:
        self.scenario = scenario
        self.scale = scale
        self.redis = redis
        self.vendor = vendor
        self.pool: WorkerPool | None = None
        self.producer: Producer | None = None
        self.admin: Admin | None = None
        self.windows = Windows()
        self.notes: list[str] = []
        self.started = time.time()

    def at(self, progress: float, timeout: float = 600) -> None:
        """Wait until the producer has sent this fraction of the events."""
        deadline = time.time() + timeout
        assert self.producer is not None
        while self.producer.progress < progress and self.producer.is_alive() and time.time() < deadline:
            time.sleep(0.02)

    def wait_in_flight(self, mount: str, timeout: float = 5.0) -> bool:
        """Wait for a request in flight at ``mount`` (so a kill lands mid-request)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.vendor.in_flight(mount) > 0:
                return True
            time.sleep(0.01)
        return False

    def note(self, text: str) -> None:
        self.notes.append(f"t+{time.time() - self.started:.1f}s {text}")

    def active_workers(self, destination: str) -> list[Managed]:
        """The workers holding the destination's events (its drains), by the consumer names of
        the stream group (``host:pid``); every running worker when that cannot be told."""
        assert self.pool is not None and self.admin is not None
        running = self.pool.running
        pids: set[int] = set()
        for key in stream_keys(self.admin, destination):
            try:
                for consumer in self.admin.redis.xinfo_consumers(key, "relay"):
                    if consumer.get("pending", 0) > 0:
                        name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
                        pids.update(int(p) for p in re.findall(r":(\d+)\b", name))
            except Exception:
                continue
        holders = [m for m in running if pids & set(process_tree(m.worker.proc.pid))]
        return holders or running

    def stop_worker(self, destination: str, how: str) -> None:
        """Signal the worker draining ``destination`` (``sigkill``, ``sigterm-main`` or
        ``sigterm-group``) while a request is in flight, and start a replacement."""
        assert self.pool is not None
        mount = self.scenario.destinations[destination][1]
        self.wait_in_flight(mount)
        targets = self.active_workers(destination)[:1]
        for member in targets:
            if how != "sigterm-main":  # a warm shutdown lets the request finish and be recorded
                self.windows.kills.append(time.time())
            if how == "sigkill":
                self.pool.sigkill(member)
            else:
                self.pool.sigterm(member, group=how == "sigterm-group")
        self.note(f"{how} of {len(targets)} worker(s)")
        self.pool.start()

    def redis_outage(self, seconds: float) -> None:
        """SIGKILL redis-server, wait, start it again on the same port from its AOF."""
        down = time.time()
        self.redis.kill()
        self.note(f"redis-server SIGKILLed for {seconds} s")
        time.sleep(seconds)
        self.redis.start()
        self.windows.redis_down.append((down, time.time()))
        self.note("redis-server restarted from its AOF")


def stream_keys(admin: Admin, destination: str) -> list[str]:
    keys = admin.keys
    if hasattr(keys, "streams"):
        parts = admin.settings.destination(destination).parallel_drains
        return list(keys.streams(destination, parts))
    return [keys.stream(destination)]


def backlog_reader(admin: Admin, names: list[str]) -> Any:
    def read() -> dict[str, int]:
        status = admin.status(waiting_limit=1)
        out = {}
        for name in names:
            backlog = status[name]["backlog"]
            out[name] = int(backlog.get("unread", 0)) + int(backlog.get("pending", 0)) + status[name]["waiting_batches"]
        return out

    return read


def run(scenario: Scenario, scale_name: str = "full", events: int | None = None, keep: bool = False) -> dict[str, Any]:
    scale = scenario.scale(scale_name, events)
    workdir = Path(tempfile.mkdtemp(prefix=f"cr-chaos-{scenario.name}-"))
    redis = RedisProcess(workdir / "redis", maxmemory_mb=scale.maxmemory_mb)
    vendor = VendorProcess(workdir / "vendor.log")
    ctx = Context(scenario, scale, redis, vendor)
    result: dict[str, Any] = {"scenario": scenario.name, "scale": scale_name}
    try:
        result.update(_run(ctx, workdir))
    except Exception as exc:
        result.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
    finally:
        if ctx.pool is not None:
            ctx.pool.stop()
        vendor.stop()
        redis.stop()
        if keep:
            result["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def _run(ctx: Context, workdir: Path) -> dict[str, Any]:
    scenario, scale = ctx.scenario, ctx.scale
    tables = {}
    for name, (vendor_name, mount) in scenario.destinations.items():
        overrides = {**scale.destination.get("*", {}), **scale.destination.get(name, {})}
        tables[name] = destination_table(vendor_name, ctx.vendor.url_for(mount), **overrides)
    settings, env, dropped = compatible_settings(workdir, ctx.redis.port, dict(scale.relay), tables)
    for mount, latency in scale.latency.items():
        ctx.vendor.configure(mount, latency_seconds=latency)
    admin = Admin(settings, connect(settings.redis_url, socket_timeout=5.0))
    ctx.admin = admin
    names = list(scenario.destinations)
    ctx.pool = WorkerPool(env, workdir, scale.concurrency)
    for _ in range(scale.workers):
        ctx.pool.start()
    relay = Relay(settings)
    sampler = Sampler(backlog_reader(admin, names), also=ctx.pool.poll)
    producer = Producer(
        relay, scenario.name, scale.events, scale.rate, scale.per_call, names, separately=scale.separately
    )
    ctx.producer = producer
    memory = MemoryWatch(ctx.redis, ctx.pool)
    if scale.maxmemory_mb:
        sampler.also = memory.sample
    ctx.started = started = time.time()
    sampler.start()
    producer.start()
    try:
        scenario.fault(ctx, scale.timings)
    except Exception as exc:
        ctx.note(f"the fault script failed: {type(exc).__name__}: {exc}")
    producer.join()
    settled = wait_settled(sampler, names, started + scale.settle_timeout)
    settled_at = time.time()
    for mount in {mount for _, mount in scenario.destinations.values()}:
        deadline = time.time() + 30
        while ctx.vendor.in_flight(mount) and time.time() < deadline:
            time.sleep(0.1)
    sampler.stop()
    exits = ctx.pool.unexpected_exits()
    shutdowns = ctx.pool.shutdown_times()
    per_dest = {}
    for name, (_, mount) in scenario.destinations.items():
        # The read timeout runs from when the request was sent, which is when it reaches the vendor.
        timeout = settings.destination(name).read_timeout_seconds
        letters = list(admin.letters.select(Selection(destination=name)))
        figures = destination_figures(
            producer.tally.accepted[name],
            producer.tally.refused[name],
            ctx.vendor.log_of(mount),
            letters,
            sampler.samples,
            name,
            timeout,
            ctx.windows,
            started,
        )
        per_dest[name] = {**figures.__dict__, "vendor_counters": ctx.vendor.summary(mount).get("counters")}
    relay.close()
    admin.redis.close()
    out = summarise(per_dest)
    out.update(
        workers_exited=len(exits),
        settled=settled,
        duration_s=round(settled_at - started, 1),
        backlog_at_end=sampler.latest(),
        refused_errors=producer.tally.errors,
        gave_up_unreachable=producer.tally.given_up,
        workers_started=len(ctx.pool.members),
        workers_signalled=sum(1 for m in ctx.pool.members if m.signalled),
        shutdowns=shutdowns,
        exits=exits,
        config_dropped=dropped,
        supported=not any("max_backlog_events" in d for d in dropped),
        faults=ctx.notes,
        parameters=scale.describe(),
        destinations=per_dest,
    )
    if scale.maxmemory_mb:
        out["redis_memory_peak_mb"] = round(memory.peak / 2**20, 2)
    out["notes"] = explain(out, settled)
    out["invariants"] = check(out, scenario.healthy)
    return out


class MemoryWatch:
    """Redis's peak ``used_memory`` (and the worker poll the sampler does anyway)."""

    def __init__(self, redis: RedisProcess, pool: WorkerPool) -> None:
        self.redis, self.pool, self.peak = redis, pool, 0

    def sample(self) -> None:
        self.pool.poll()
        self.peak = max(self.peak, self.redis.used_memory())


def wait_settled(sampler: Sampler, names: list[str], deadline: float) -> bool:
    """Until the backlog of every destination read zero ``SETTLED_SAMPLES`` times in a row."""
    while time.time() < deadline:
        recent = sampler.samples[-SETTLED_SAMPLES:]
        if len(recent) == SETTLED_SAMPLES and all(v is not None and not any(v.values()) for _, v in recent):
            return True
        time.sleep(0.1)
    return False


def summarise(per_dest: dict[str, dict[str, Any]]) -> dict[str, Any]:
    total = {
        key: sum(d[key] for d in per_dest.values())
        for key in (
            "accepted",
            "refused",
            "delivered",
            "dead_lettered",
            "duplicated",
            "duplicated_ambiguous",
            "duplicated_unexplained",
            "lost",
        )
    }
    total["stall_s"] = max((d["stall_s"] for d in per_dest.values()), default=0.0)
    ambiguous: dict[str, int] = {}
    for d in per_dest.values():
        for why, n in d["ambiguous_requests"].items():
            ambiguous[why] = ambiguous.get(why, 0) + n
    total["ambiguous"] = ambiguous
    return total


def explain(out: dict[str, Any], settled: bool) -> list[str]:
    notes = []
    if not settled:
        left = out.get("backlog_at_end")
        notes.append(
            "did not settle within the timeout: lost counts what was still missing then, most of it still in "
            f"the relay's backlog (unread and in-flight events + waiting batches at the end: {left})"
        )
    if out["duplicated_ambiguous"]:
        kinds = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in out["ambiguous"].items())
        notes.append(
            f"{out['duplicated_ambiguous']} duplicates of events whose request's outcome the relay could "
            f"not know ({kinds}): the vendor took them, the relay sent them again"
        )
    if out["duplicated_unexplained"]:
        notes.append(f"{out['duplicated_unexplained']} duplicates with no ambiguous request behind them")
    if not out["supported"]:
        notes.append("max_backlog_events: not supported by this version (run without a cap)")
    return notes


def check(out: dict[str, Any], healthy: tuple[str, ...] = ()) -> dict[str, bool]:
    """The issue's invariants: nothing lost, no worker died by itself, no stall over 15 s,
    duplicates only where the outcome was ambiguous; and that the run settled at all."""
    found = {
        "lost_0": out["lost"] == 0,
        "workers_exited_0": out["workers_exited"] == 0,
        "stall_le_15": out["stall_s"] <= STALL_LIMIT_SECONDS,
        "no_unexplained_duplicates": out["duplicated_unexplained"] == 0,
        "settled": bool(out["settled"]),
    }
    if healthy:
        found["healthy_unaffected"] = all(
            out["destinations"][name]["refused"] == 0
            and out["destinations"][name]["delivered"] == out["destinations"][name]["accepted"]
            for name in healthy
        )
    return found
