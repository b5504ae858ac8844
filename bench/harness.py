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

from conversion_relay.embedded import EmbeddedRedis, EmbeddedWorker

BENCH_KEY_ENV = "BENCH_GRAVITY_KEY"


class Sink:
    """``bench.sink`` in its own process (it must not share a GIL with what it measures)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sink"], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

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
    """Environment of the relay under test: all four vendors configured, each at the sink.

    The single-event and bulk runs send to ``gravity`` alone (as the naive relay does); the
    fan-out run to all four.  Gravity Field's 500 requests/s limit is lifted: the sink has none,
    and the run measures the relay, not the vendor's quota.
    """
    common = [f'api_key_env = "{BENCH_KEY_ENV}"']
    lines = ["[relay]"] + [f"{k} = {v!r}" for k, v in (relay or {}).items()]
    lines += ["[destinations.gravity]", 'vendor = "gravity_capi"', f'base_url = "{sink.url}"', *common]
    lines += ["skip_events = []  # every sample event reaches the sink, views included"]
    lines += ["[destinations.field]", 'vendor = "gravity_field"', f'base_url = "{sink.url}"', *common]
    lines += ["rate_limit_per_second = 0", "parallel_drains = 4"]
    lines += ["[destinations.tracify]", 'vendor = "tracify"', f'base_url = "{sink.url}"', *common]
    lines += ['customer_site_id = "00000000-0000-0000-0000-000000000000"']
    reco_url = f"{sink.url}/grrec-bench-war/WebshopServlet"
    lines += ["[destinations.reco]", 'vendor = "gravity_reco"', f'base_url = "{reco_url}"']
    lines += [*common, 'username = "bench"']
    config = workdir / "relay.toml"
    config.write_text("\n".join(lines) + "\n")
    return {
        **os.environ,
        "REDIS_URL": redis.url(1),
        "CONVERSION_RELAY_BROKER_URL": redis.url(0),
        "CONVERSION_RELAY_CONFIG": str(config),
        BENCH_KEY_ENV: "bench-key",
    }


def naive_env(redis: EmbeddedRedis, sink: Sink) -> dict[str, str]:
    return {**os.environ, "NAIVE_BROKER_URL": redis.url(2), "NAIVE_SINK_URL": sink.url}


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
