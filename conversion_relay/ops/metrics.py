"""Metrics in the Prometheus text format, read from Redis at every scrape.

The workers already keep everything in Redis -- counters, backlog, back-off, histograms, the
heartbeats -- so the collector reads it there instead of keeping numbers in the process: a
prefork pool, or workers on many hosts, need no multiprocess directory, and any one process
(``conversion-relay metrics``, the console) serves the whole relay's numbers.

Every metric is named and explained in :data:`METRICS` (docs/operations.md lists them too); a
scrape while Redis is out of reach still answers, with ``conversion_relay_redis_up 0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from conversion_relay.ops.admin import Admin, redis_time
from conversion_relay.store import stats
from conversion_relay.store.connection import connect
from conversion_relay.store.keys import Keys
from conversion_relay.store.stats import Counter
from conversion_relay.store.workers import alive

if TYPE_CHECKING:
    from conversion_relay.config.settings import Settings

#: Every metric the collector exports (the name without ``_total``), with its help text.
METRICS = {
    "conversion_relay_redis_up": "1 if Redis answered this scrape, else 0 (and nothing else is reported).",
    "conversion_relay_workers": "Workers whose heartbeat has not lapsed.",
    "conversion_relay_destination_enabled": "1 if the destination is enabled in the configuration.",
    "conversion_relay_events": "Events (or vendor parts) by what became of them: accepted, delivered, duplicate, "
    "test_ok, skipped, retried, deferred, dead_lettered, reclaimed.",
    "conversion_relay_requests": "Requests the vendor answered, or that failed once sent.",
    "conversion_relay_requests_split": "Requests split in halves (too large, or refused whole).",
    "conversion_relay_skipped_events": "Events not sent, by skip reason.",
    "conversion_relay_dead_lettered_events": "Events dead-lettered, by reason (replayed and purged ones included).",
    "conversion_relay_dead_letters": "Dead letters in the store now.",
    "conversion_relay_backlog_events": "Events not yet resolved: unread in the streams, in_flight (read by a "
    "drain), waiting (in batches waiting for another attempt).",
    "conversion_relay_waiting_batches": "Batches waiting for another attempt.",
    "conversion_relay_oldest_undelivered_age_seconds": "Age of the oldest event not yet resolved (0 when there is "
    "none): the lag to alert on.",
    "conversion_relay_backing_off": "1 while the whole destination backs off after transient failures.",
    "conversion_relay_backoff_remaining_seconds": "Seconds until the destination's back-off ends (0 if none).",
    "conversion_relay_breaker_failures": "Transient failures in the current run (0 once the vendor answers).",
    "conversion_relay_last_success_timestamp_seconds": "When the vendor last took a request (epoch s; "
    "absent until it has).",
    "conversion_relay_request_duration_seconds": "Duration of requests that reached the vendor.",
    "conversion_relay_batch_size_events": "Events per request that reached the vendor.",
}


class RelayCollector:
    """A prometheus-client collector that reads the relay's state from Redis on every scrape."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client if client is not None else connect(settings.redis_url, socket_timeout=5.0)
        self.keys = Keys(settings.key_prefix)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("conversion_relay_redis_up", METRICS["conversion_relay_redis_up"])
        try:
            families = self._families()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> list[Metric]:
        now = redis_time(self.redis)
        status = Admin(self.settings, self.redis).status(waiting_limit=1)
        out = _Families()
        workers = out.gauge("conversion_relay_workers", [])
        workers.add_metric([], len(alive(self.redis, self.keys, now)))
        for name, dest in status.items():
            self._destination(out, name, dest, now)
        return out.all()

    def _destination(self, out: _Families, name: str, dest: dict[str, Any], now: float) -> None:
        labels = [name]
        out.gauge("conversion_relay_destination_enabled", ["destination"]).add_metric(labels, int(dest["enabled"]))
        events = out.counter("conversion_relay_events", ["destination", "outcome"])
        counters = dest["counters"]
        for counter in Counter:
            if counter not in (Counter.REQUESTS, Counter.SPLIT):
                events.add_metric([name, counter.value], counters[counter.value])
        out.counter("conversion_relay_requests", ["destination"]).add_metric(labels, counters[Counter.REQUESTS.value])
        out.counter("conversion_relay_requests_split", ["destination"]).add_metric(
            labels, counters[Counter.SPLIT.value]
        )
        skipped = out.counter("conversion_relay_skipped_events", ["destination", "reason"])
        for reason, n in dest["skipped_by_reason"].items():
            skipped.add_metric([name, reason], n)
        dead = out.counter("conversion_relay_dead_lettered_events", ["destination", "reason"])
        for reason, n in sorted(stats.dead_by_reason(self.redis, self.keys, name).items()):
            dead.add_metric([name, reason], n)
        out.gauge("conversion_relay_dead_letters", ["destination"]).add_metric(labels, dest["dead_letters"])
        backlog = out.gauge("conversion_relay_backlog_events", ["destination", "state"])
        backlog.add_metric([name, "unread"], dest["backlog"]["unread"])
        backlog.add_metric([name, "in_flight"], dest["backlog"]["pending"])
        backlog.add_metric([name, "waiting"], dest["waiting_events"])
        out.gauge("conversion_relay_waiting_batches", ["destination"]).add_metric(labels, dest["waiting_batches"])
        age = out.gauge("conversion_relay_oldest_undelivered_age_seconds", ["destination"])
        age.add_metric(labels, dest["oldest_undelivered_age_seconds"])
        until = dest["backing_off_until"]
        remaining = max(0.0, until - now) if until else 0.0
        out.gauge("conversion_relay_backing_off", ["destination"]).add_metric(labels, int(remaining > 0))
        out.gauge("conversion_relay_backoff_remaining_seconds", ["destination"]).add_metric(labels, remaining)
        failing = dest["failing"]
        failures = out.gauge("conversion_relay_breaker_failures", ["destination"])
        failures.add_metric(labels, failing["failures"] if failing else 0)
        seen = stats.observed(self.redis, self.keys, name)
        last = out.gauge("conversion_relay_last_success_timestamp_seconds", ["destination"])
        if dest["last_success"] is not None:
            last.add_metric(labels, dest["last_success"])
        for metric, field in (
            ("conversion_relay_request_duration_seconds", "duration"),
            ("conversion_relay_batch_size_events", "size"),
        ):
            histogram = out.histogram(metric, ["destination"])
            histogram.add_metric(labels, seen[field]["buckets"], seen[field]["sum"])


class _Families:
    """One family per metric name, shared by every destination's samples."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def _get(self, kind: type, name: str, labels: list[str]) -> Any:
        if name not in self._by_name:
            self._by_name[name] = kind(name, METRICS[name], labels=labels)
        return self._by_name[name]

    def gauge(self, name: str, labels: list[str]) -> GaugeMetricFamily:
        return self._get(GaugeMetricFamily, name, labels)

    def counter(self, name: str, labels: list[str]) -> CounterMetricFamily:
        return self._get(CounterMetricFamily, name, labels)

    def histogram(self, name: str, labels: list[str]) -> HistogramMetricFamily:
        return self._get(HistogramMetricFamily, name, labels)

    def all(self) -> list[Metric]:
        return list(self._by_name.values())


def registry(settings: Settings, client: redis.Redis | None = None) -> CollectorRegistry:
    """A registry holding only the relay's collector (no process metrics of the scraping host)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(RelayCollector(settings, client))
    return found


def metrics_text(settings: Settings, client: redis.Redis | None = None) -> bytes:
    """One scrape, as the text a ``/metrics`` page serves (for the console to mount)."""
    return generate_latest(registry(settings, client))
