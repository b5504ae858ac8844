"""Producer processes for the benchmarks.

Each producer builds its events before the start signal, so only enqueueing is timed, then
sends them through the relay (``Relay.enqueue``) or the naive baseline (validate, then
``deliver.delay`` per event).  Both validate and hash with the same canonical schema.
"""

from __future__ import annotations

import functools
import gc
import itertools
import multiprocessing as mp
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from conversion_relay.samples import conversion

BULK = 1000
#: Numbers each producer group, so that no two runs send the same event ids.
_RUNS = itertools.count()


@dataclass
class Job:
    system: str  # "relay" or "naive"
    mode: str  # "single" or "bulk"
    env: dict[str, str]
    first: int  # index of this producer's first event (ids stay unique across producers)
    count: int
    pace_seconds: float = 0.0  # pause between single calls (latency runs: an idle worker)
    destinations: list[str] | None = None  # relay only; None: every configured destination


def events_for(first: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(first)
    now = int(time.time())
    return [conversion(rng, first + n, now=now) for n in range(count)]


def _sender(job: Job) -> Any:
    if job.system == "relay":
        from conversion_relay import Relay

        return functools.partial(Relay().enqueue, destinations=job.destinations)
    from bench.naive import deliver
    from conversion_relay.schemas.canonical import canonical_many_schema, canonical_schema

    one, many = canonical_schema(), canonical_many_schema()

    def naive(events: Any) -> None:
        for event in many.load(events) if isinstance(events, list) else [one.load(events)]:
            deliver.delay(event)

    return naive


def _produce(job: Job, ready: Any, go: Any, results: Any) -> None:
    os.environ.update(job.env)
    events = events_for(job.first, job.count)
    send = _sender(job)
    send(events[0])  # connect and warm up outside the timing; counted like the rest
    # The prepared events are the harness's, not the producer's: a web app does not hold
    # thousands of events for the garbage collector to walk on every full collection.
    gc.freeze()
    ready.put(os.getpid())
    go.wait()
    latencies = []
    started, cpu_started = time.perf_counter(), time.process_time()
    if job.mode == "single":
        for event in events[1:]:
            t0 = time.perf_counter()
            send(event)
            latencies.append(time.perf_counter() - t0)
            if job.pace_seconds:
                time.sleep(job.pace_seconds)
    else:
        rest = events[1:]
        for start in range(0, len(rest), BULK):
            send(rest[start : start + BULK])
    results.put(
        {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu_started, "latencies": latencies}
    )


def _validate_only(first: int, count: int, ready: Any, go: Any, results: Any) -> None:
    from conversion_relay.schemas.canonical import canonical_many_schema

    many = canonical_many_schema()
    events = events_for(first, count)
    many.load(events[:10])
    ready.put(os.getpid())
    go.wait()
    started = time.perf_counter()
    for start in range(0, count, BULK):
        many.load(events[start : start + BULK])
    results.put({"seconds": time.perf_counter() - started, "latencies": []})


class Producers:
    """Start processes, wait until all are ready, then release them at once."""

    def __init__(self, target: Any, argsets: list[tuple[Any, ...]]) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.results, self.go = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.procs = [ctx.Process(target=target, args=(*args, self.ready, self.go, self.results)) for args in argsets]
        for proc in self.procs:
            proc.start()
        for _ in self.procs:
            self.ready.get(timeout=300)

    def run(self) -> tuple[float, list[dict[str, Any]]]:
        """Release the producers; return the release time and each producer's report."""
        released = time.time()
        self.go.set()
        reports = [self.results.get(timeout=1800) for _ in self.procs]
        for proc in self.procs:
            proc.join(30)
        return released, reports


def producers(
    system: str,
    mode: str,
    env: dict[str, str],
    total: int,
    processes: int,
    pace: float = 0.0,
    destinations: list[str] | None = None,
) -> Producers:
    share = total // processes
    # Ids are unique across runs too: the relay takes a repeated call (same ids, same
    # destinations) within enqueue_dedup_seconds as a retry and stores it once.
    base = next(_RUNS) * 1_000_000_000
    jobs = [
        Job(system, mode, env, base + i * share + i * 10_000_000, share, pace, destinations) for i in range(processes)
    ]
    return Producers(_produce, [(job,) for job in jobs])


def validation_only(total: int) -> float:
    """Events per second that merely pass the canonical schema, in one process, bulk loads."""
    group = Producers(_validate_only, [(0, total)])
    _, [report] = group.run()
    return total / report["seconds"]
