"""The parts a benchmark run starts and stops: Redis, the sink, relay and naive workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.sink import vendor_url
from conversion_relay.embedded import EmbeddedRedis, EmbeddedWorker, write_config
from conversion_relay.sandbox import sandbox_classes
from conversion_relay.vendors import adapter_classes

BENCH_KEY_ENV = "BENCH_GRAVITY_KEY"
#: The naive baseline (bench/naive.py) is a relay of that one vendor: it posts its requests.
NAIVE_VENDOR = "gravity_capi"
#: Drains per destination of a rate-limited vendor: one user per request needs several in
#: flight to reach the limit.
RATE_LIMITED_PARALLEL_DRAINS = 4


class Sink:
    """``bench.sink`` in its own process (it must not share a GIL with what it measures)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sink"], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def url_for(self, vendor: str) -> str:
        """The base URL at which the sink answers as ``vendor`` (its sandbox's mount and path)."""
        return vendor_url(self.url, vendor)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/reset", data=b"{}"), timeout=10).read()

    def wait_for(self, events: int, timeout: float, vendor: str | None = None) -> float:
        """Block until the sink has counted ``events`` (of ``vendor``, or of all); return when."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            stats = self.stats()
            if (stats["by_vendor"].get(vendor, 0) if vendor else stats["events"]) >= events:
                return time.time()
            time.sleep(0.02)
        raise TimeoutError(f"the sink counted {self.stats()} in {timeout} s, waiting for {events} events")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def relay_env(redis: EmbeddedRedis, sink: Sink, workdir: Path, relay: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment of the relay under test: every registered vendor configured, each at the
    sink, under its default destination name.

    The single-event and bulk runs send to ``gravity`` alone (as the naive relay does); the
    fan-out run to all.  Every sample event reaches the sink, views included (``skip_events``
    empty).  A rate-limited vendor (Gravity Field) runs at its documented maximum (the default
    leaves half to the site's own calls, which the bench has none of).
    """
    destinations: dict[str, dict[str, Any]] = {}
    for vendor, adapter in adapter_classes().items():
        table: dict[str, Any] = {
            "vendor": vendor,
            "base_url": sink.url_for(vendor),
            "api_key_env": BENCH_KEY_ENV,
            "skip_events": [],
            **sandbox_classes()[vendor].destination_options,
        }
        limit = getattr(adapter, "rate_limit_per_second_limit", None)
        if adapter.default_rate_limit_per_second and limit:
            table.update(rate_limit_per_second=limit, parallel_drains=RATE_LIMITED_PARALLEL_DRAINS)
        destinations[adapter.default_destination_name] = table
    config = write_config(workdir / "relay.toml", dict(relay or {}), destinations)
    return {
        **os.environ,
        "REDIS_URL": redis.url(1),
        "CONVERSION_RELAY_BROKER_URL": redis.url(0),
        "CONVERSION_RELAY_CONFIG": str(config),
        BENCH_KEY_ENV: "bench-key",
    }


def naive_env(redis: EmbeddedRedis, sink: Sink) -> dict[str, str]:
    return {**os.environ, "NAIVE_BROKER_URL": redis.url(2), "NAIVE_SINK_URL": sink.url_for(NAIVE_VENDOR)}


def start_relay_worker(env: dict[str, str], workdir: Path, concurrency: int = 2) -> EmbeddedWorker:
    return EmbeddedWorker(env, workdir / "relay-worker.log", concurrency=concurrency)


def start_naive_worker(env: dict[str, str], workdir: Path, concurrency: int = 2) -> EmbeddedWorker:
    """``celery -A bench.naive worker``, started like the relay's workers."""
    return EmbeddedWorker(env, workdir / "naive-worker.log", concurrency=concurrency, app="bench.naive")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants that are still running."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total
