"""``make demo``: the whole relay on one machine, with nothing configured.

Uses the Redis at ``REDIS_URL`` or starts a private one with its files under ``./var/``, starts
the vendor sandboxes and a Celery worker on the built-in sandbox configuration (asked for with
``CONVERSION_RELAY_CONFIG=sandbox``; its data lives under the key prefix ``cr-sandbox``),
enqueues a few thousand conversions one by one (some invalid, some the sandboxes fail or
refuse), waits until every accepted event is delivered or dead-lettered, prints a report, and
stops what it started.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conversion_relay import EventValidationError, Relay
from conversion_relay.config.settings import load_settings
from conversion_relay.embedded import EmbeddedRedis, EmbeddedWorker, free_port
from conversion_relay.ops.admin import Admin
from conversion_relay.samples import conversion, invalid
from conversion_relay.sandbox import SandboxBase, SandboxServer, mounted_sandboxes
from conversion_relay.store import stats
from conversion_relay.store.deadletter import Selection
from conversion_relay.store.stats import Counter
from conversion_relay.vendors import adapter_classes

VAR = Path("var")
EVENTS = 3000
#: Share of calls that are invalid, re-sent (duplicates) or refused by the vendor.
INVALID_EVERY, DUPLICATE_EVERY, REFUSED_EVERY, OPTED_OUT_EVERY = 67, 50, 200, 300
#: Event ids the sandboxes are asked to refuse one by one (where the vendor answers per event).
REFUSED_PREFIX = "refused-"


def main() -> int:
    VAR.mkdir(exist_ok=True)
    started: list[Any] = []
    try:
        return run(started)
    finally:
        for thing in reversed(started):
            thing()


def run(started: list[Any]) -> int:
    print("conversion-relay demo\n")
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        print(f"  Redis    {redis_url.split('@')[-1]} (from REDIS_URL)")
    else:
        server = EmbeddedRedis(VAR / "redis")
        started.append(server.stop)
        redis_url = server.url(0)
        print(f"  Redis    private redis-server {server.version()} on 127.0.0.1:{server.port}, files in {server.dir}/")

    mounts = mounted_sandboxes()
    sandbox = SandboxServer(mounts, port=free_port()).start()
    started.append(sandbox.stop)
    print(f"  sandbox  {sandbox.url} ({', '.join(mounts)})")

    env = dict(os.environ, CONVERSION_RELAY_CONFIG="sandbox")  # the built-in sandbox configuration
    env.update(REDIS_URL=redis_url, CONVERSION_RELAY_SANDBOX_URL=sandbox.url, PYTHONUNBUFFERED="1")
    settings = load_settings(env)
    log_path = VAR / "demo-worker.log"
    worker = EmbeddedWorker(env, log_path, concurrency=5)
    started.append(worker.stop)
    print(f"  worker   celery worker, 5 processes, built-in sandbox configuration (log: {log_path})\n")

    relay = Relay(settings)
    admin = Admin(settings, relay.redis)
    clear_previous_run(relay)
    inject_faults(mounts.values())

    print(f"Enqueuing {EVENTS:,} conversions one call at a time, as a web app would")
    rejected, latencies = enqueue_all(relay)
    accepted = EVENTS - rejected
    stored = min(stats.value(relay.redis, relay.keys, d.name, Counter.ACCEPTED) for d in settings.enabled_destinations)
    print(
        f"  accepted {accepted:,}, rejected at enqueue {rejected} (field errors, nothing stored);\n"
        f"  {accepted - stored} of them orders the shop sent again, which the relay recognised and stored once;\n"
        f"  enqueue p50 {statistics.median(latencies):.2f} ms, p99 {percentile(latencies, 99):.2f} ms "
        "(worker busy delivering)\n"
    )

    began = time.monotonic()
    settled = wait_until_settled(admin, settings)
    print(f"\nDelivery {'finished' if settled else 'NOT finished (timed out)'} in {time.monotonic() - began:.1f} s\n")
    print(report(admin))
    return 0 if settled else 1


def clear_previous_run(relay: Relay) -> None:
    """A demo against a reused Redis starts from zero: its own keys only."""
    for key in relay.redis.scan_iter(f"{relay.keys.prefix}:*"):
        relay.redis.delete(key)


def inject_faults(sandboxes: Iterable[SandboxBase]) -> None:
    """Outages, rate limits, an oversized batch and per-event refusals, so the report has
    something to show for every vendor: each sandbox says which of them its vendor can show."""
    opted_out = [str(10000 + n) for n in range(0, EVENTS, OPTED_OUT_EVERY)]
    for vendor in sandboxes:
        vendor.configure(**vendor.demo_faults(REFUSED_PREFIX, opted_out))


def enqueue_all(relay: Relay) -> tuple[int, list[float]]:
    rng = random.Random(2026)
    rejected, latencies, sent = 0, [], []
    for n in range(EVENTS):
        if n % INVALID_EVERY == INVALID_EVERY - 1:
            event = invalid(rng, n)
        elif n % REFUSED_EVERY == REFUSED_EVERY // 2:
            event = {**conversion(rng, n), "event_id": f"{REFUSED_PREFIX}{n}"}
        elif n % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and sent:
            event = rng.choice(sent)
        else:
            event = conversion(rng, n)
            sent.append(event)
        t0 = time.perf_counter()
        try:
            relay.enqueue(event)
            latencies.append((time.perf_counter() - t0) * 1000)
        except EventValidationError:
            rejected += 1
        if n % 50 == 0 or n == EVENTS - 1:
            progress(n + 1, EVENTS, final=n == EVENTS - 1)
    print()
    return rejected, latencies


def progress(done: int, total: int, width: int = 40, *, final: bool = False) -> None:
    """A bar redrawn in place on a terminal; elsewhere (CI logs) only the final state."""
    if not sys.stdout.isatty() and not final:
        return
    filled = int(width * done / total)
    sys.stdout.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
    sys.stdout.flush()


def wait_until_settled(admin: Admin, settings: Any, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    names = [d.name for d in settings.enabled_destinations]
    while time.monotonic() < deadline:
        status = admin.status(waiting_limit=1)
        accounted = total = 0
        for name in names:
            c = status[name]["counters"]
            total += c[Counter.ACCEPTED]
            resolved = (Counter.DELIVERED, Counter.DUPLICATE, Counter.SKIPPED, Counter.TEST_OK, Counter.DEAD_LETTERED)
            accounted += sum(c[counter] for counter in resolved)
        if accounted >= total and all(
            status[n]["waiting_batches"] == 0 and not any(status[n]["backlog"].values()) for n in names
        ):
            progress(total, max(total, 1), final=True)
            print()
            return True
        progress(min(accounted, total), max(total, 1))
        time.sleep(0.2)
    print()
    return False


def report(admin: Admin) -> str:
    titles = {vendor: cls.title for vendor, cls in adapter_classes().items()}
    columns = (
        Counter.ACCEPTED,
        Counter.DELIVERED,
        Counter.DUPLICATE,
        Counter.SKIPPED,
        Counter.RETRIED,
        Counter.DEAD_LETTERED,
        Counter.REQUESTS,
    )
    header = f"{'destination':12} {'vendor':26}" + "".join(f"{c.replace('_', '-'):>14}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, info in admin.status().items():
        counters = info["counters"]
        lines.append(
            f"{name:12} {titles.get(info['vendor'], info['vendor']):26}"
            + "".join(f"{counters[c]:>14,}" for c in columns)
        )
    lines.append("")
    lines.append(
        "accepted: events enqueued for the destination; delivered, duplicate, retried, dead-lettered: vendor\n"
        "events (RECO gets one per line item); retried: attempts that failed transiently (5xx, 429, timeouts)\n"
        "and waited in Redis for another; duplicate: events the vendor had already (sent again after a\n"
        "lost answer, or re-sent by the shop after enqueue_dedup_seconds);\n"
        "skipped: the vendor cannot express the event (docs/mapping.md), or the user opted out."
    )
    letters = admin.list(Selection(limit=5))
    if letters:
        lines.append("\nDead letters (first 5; `conversion-relay dlq list` shows all, `dlq replay` sends them again):")
        for row in letters:
            where = f"{row['destination']:10} {row['reason']:24}"
            lines.append(f"  {row['id']}  {where} {row['events']} events, status {row['status']}")
    return "\n".join(lines)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


if __name__ == "__main__":
    sys.exit(main())
