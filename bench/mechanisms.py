"""Which durable buffer between producer and drain: the measurement behind the choice.

    python -m bench.mechanisms [--events 50000]

For each candidate, on a private Redis: the producer's cost to append one event (p50, p99),
the rate a consumer drains a backlog in batches of 1,000 with a crash-safe acknowledgement, and
Redis memory per buffered event.

- ``celery``: one Celery message per event (``send_task``), the shape of the naive relay;
- ``list``: ``RPUSH``; the consumer moves a batch into its own processing list with a Lua script
  (``LRANGE`` + ``LTRIM`` + ``RPUSH``) and deletes it when done;
- ``stream``: ``XADD``; the consumer reads with ``XREADGROUP`` and acknowledges with
  ``XACK`` + ``XDEL`` (what conversion-relay does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.workloads import events_for
from conversion_relay.embedded import EmbeddedRedis
from conversion_relay.schemas.canonical import canonical_many_schema

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000
_MOVE = """
local items = redis.call('LRANGE', KEYS[1], 0, ARGV[1] - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  redis.call('RPUSH', KEYS[2], unpack(items))
end
return items
"""


def latencies(append: Callable[[bytes], Any], payloads: list[bytes]) -> dict[str, float]:
    samples = []
    for payload in payloads:
        started = time.perf_counter()
        append(payload)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return {
        "append_p50_us": statistics.median(samples) * 1e6,
        "append_p99_us": samples[int(len(samples) * 0.99)] * 1e6,
        "appends_per_s": len(samples) / sum(samples),
    }


def memory_per_event(client: redis.Redis, before: int, events: int) -> float:
    return (int(client.info("memory")["used_memory"]) - before) / events


def measure_list(client: redis.Redis, payloads: list[bytes]) -> dict[str, Any]:
    before = int(client.info("memory")["used_memory"])
    result = latencies(lambda p: client.rpush("buffer", p), payloads)
    result["bytes_per_event"] = memory_per_event(client, before, len(payloads))
    move = client.register_script(_MOVE)
    started, drained = time.perf_counter(), 0
    while True:
        items = move(keys=["buffer", "processing:c1"], args=[BATCH])
        if not items:
            break
        [orjson.loads(item) for item in items]
        client.delete("processing:c1")
        drained += len(items)
    result["drain_per_s"] = drained / (time.perf_counter() - started)
    return result


def measure_stream(client: redis.Redis, payloads: list[bytes]) -> dict[str, Any]:
    client.xgroup_create("stream", "g", id="0", mkstream=True)
    before = int(client.info("memory")["used_memory"])
    result = latencies(lambda p: client.xadd("stream", {"c": p}), payloads)
    result["bytes_per_event"] = memory_per_event(client, before, len(payloads))
    started, drained = time.perf_counter(), 0
    while True:
        reply = client.xreadgroup("g", "c1", {"stream": ">"}, count=BATCH)
        if not reply:
            break
        entries = reply[0][1]
        [orjson.loads(fields[b"c"]) for _, fields in entries]
        ids = [entry_id for entry_id, _ in entries]
        pipe = client.pipeline(transaction=True)
        pipe.xack("stream", "g", *ids)
        pipe.xdel("stream", *ids)
        pipe.execute()
        drained += len(entries)
    result["drain_per_s"] = drained / (time.perf_counter() - started)
    return result


def measure_celery(url: str, client: redis.Redis, payloads: list[bytes]) -> dict[str, Any]:
    from celery import Celery

    app = Celery("mechanisms", broker=url)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
    events = [orjson.loads(p) for p in payloads]
    app.send_task("noop", args=[events[0]], queue="celery-buffer")
    client.delete("celery-buffer")
    before = int(client.info("memory")["used_memory"])
    position = iter(range(len(events)))
    result = latencies(lambda p: app.send_task("noop", args=[events[next(position)]], queue="celery-buffer"), payloads)
    result["bytes_per_event"] = memory_per_event(client, before, len(payloads))
    result["drain_per_s"] = None  # one task per event: see the naive relay in `make bench`
    app.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mechanisms")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    templates = canonical_many_schema().load(events_for(0, 1000))
    payloads = [orjson.dumps(dict(templates[n % 1000], event_id=f"m-{n}")) for n in range(args.events)]
    results: dict[str, Any] = {}
    with EmbeddedRedis() as server:
        for db, (name, run) in enumerate(
            (
                ("celery", lambda c: measure_celery(server.url(1), c, payloads[: min(len(payloads), 20_000)])),
                ("list", lambda c: measure_list(c, payloads)),
                ("stream", lambda c: measure_stream(c, payloads)),
            ),
            start=1,
        ):
            client = redis.Redis.from_url(server.url(db))
            results[name] = run(client)
            client.close()
        redis_version = server.version()
    print(
        f"{'mechanism':10} {'append p50':>12} {'append p99':>12} {'appends/s':>11} {'drain/s':>10} {'bytes/event':>12}"
    )
    for name, r in results.items():
        drain = f"{r['drain_per_s']:,.0f}" if r["drain_per_s"] else "-"
        print(
            f"{name:10} {r['append_p50_us']:>10.0f}µs {r['append_p99_us']:>10.0f}µs {r['appends_per_s']:>12,.0f} "
            f"{drain:>12} {r['bytes_per_event']:>12,.0f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"events": args.events, "redis": redis_version, "results": results}
    (args.out / "mechanisms.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.out / 'mechanisms.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
