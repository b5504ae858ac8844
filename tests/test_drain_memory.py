"""A drain holds a bounded number of bytes, however large the events it drains.

``XREADGROUP`` limits a read by count only, so a drain that read as many entries as a request
may carry held a thousand requests' worth of large events at once (150 events of 0.9 MB took a
worker from 45 to 308 MB).  Here a real drain, in this process, drains large events from a real
Redis to a counting sink in a process of its own (so that the sink's memory is not counted), and
the test measures two things: the drain's own accounting of what it holds
(``DrainReport.held_bytes_peak``, against ``HELD_REQUESTS * max_bytes``) and, independently of
it, the peak of the memory Python allocated while the drain ran (``tracemalloc``), less what
decoding and mapping one of the events costs by itself (orjson's parser takes a dozen times
the input for a moment), which a drain pays once at a time whatever it holds.

* the Gravity Conversions API (one group): reads and take-overs are sized by bytes;
* Gravity Field (a group per user): open chunks are bounded by bytes too, the oldest leave first
  (and the batcher's rule alone, without Redis).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from bench.sink import vendor_url
from conversion_relay.embedded import terminate
from conversion_relay.engine.drain import HELD_REQUESTS, Drainer, DrainReport
from conversion_relay.engine.runtime import Runtime
from conversion_relay.store.lease import Leases, consumer_name
from conversion_relay.store.stream import PartitionStream
from conversion_relay.vendors.batching import Batcher
from tests.conftest import destination
from tests.support import wait_for

MAX_BYTES = 1_000_000
CAP = HELD_REQUESTS * MAX_BYTES
#: Python's own overhead over the event bytes a drain holds (the request body, the mapped event,
#: the HTTP machinery), beyond decoding one event.  Before byte bounds the peak was the whole read.
OVERHEAD = 2.0


@pytest.fixture(scope="module")
def sink() -> Iterator[str]:
    """``bench.sink`` in a process of its own: answers like each vendor, keeps nothing."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.sink", "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}"
    terminate(proc)


def sink_events(url: str) -> int:
    with urllib.request.urlopen(url + "/stats", timeout=5) as answer:
        return int(json.load(answer)["events"])


@pytest.fixture
def counted(sink: str) -> str:
    urllib.request.urlopen(urllib.request.Request(sink + "/reset", data=b"", method="POST"), timeout=5).close()
    return sink


def large_purchase(i: int, items: int, user: str | None = None) -> dict[str, Any]:
    """A purchase of ``items`` line items of about 850 bytes each."""
    contents = [
        {"id": f"sku-{i}-{n}-" + "x" * 300, "quantity": 1, "item_price": 1.0, "title": "t" * 500} for n in range(items)
    ]
    return {
        "event_name": "Purchase",
        "event_id": f"big-{i}",
        "user_data": {
            "external_id": [user or f"u-{i}"],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {"value": 1.0, "currency": "EUR", "order_id": str(i), "contents": contents},
    }


def traced_peak(work: Callable[[], Any]) -> tuple[Any, int]:
    """What ``work`` returns, and the peak of the memory Python allocated meanwhile above what it
    held before."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = work()
        return result, tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()


def decoding_peak(stack: Any, name: str) -> int:
    """The peak cost of decoding and mapping the partition's first stored event alone."""
    [(_, fields)] = stack.redis.xrange(stack.keys.stream(name, 0), count=1)
    adapter = Runtime(stack.settings).destination(name).adapter
    return traced_peak(lambda: adapter.map_event(orjson.loads(fields[b"c"])))[1]


def assert_bounded(peak: int, decoding: int, report: DrainReport) -> None:
    held = peak - decoding
    assert held < OVERHEAD * CAP, (
        f"the drain allocated {peak / 1e6:.1f} MB at its peak, {held / 1e6:.1f} MB beyond decoding one "
        f"event ({decoding / 1e6:.1f} MB); the cap is {CAP / 1e6:.0f} MB"
    )
    assert 0 < report.held_bytes_peak <= CAP, report


def measured_drain(stack: Any, name: str) -> tuple[DrainReport, int, Drainer]:
    """One drain of partition 0 run to its end in this thread, and the peak of the memory
    Python allocated meanwhile above what it held before."""
    token = uuid.uuid4().hex
    assert Leases(stack.redis, stack.keys).acquire(name, 0, token, stack.settings.lease_seconds)
    drainer = Drainer(Runtime(stack.settings), name, token, 0)
    report, peak = traced_peak(drainer.run)
    return report, peak, drainer


def enqueue_one_by_one(stack: Any, events: list[dict[str, Any]], name: str) -> None:
    for event in events:
        stack.relay.enqueue(event, destinations=[name])


RELAY = {"drain_budget_seconds": 60.0, "visibility_timeout_seconds": 300.0, "flush_deadline_seconds": 0.3}


def test_reads_of_large_events_stay_within_the_byte_cap(make_stack, counted):
    stack = make_stack(
        relay=RELAY,
        destinations={"gravity": destination("gravity_capi", vendor_url(counted, "gravity_capi"), max_bytes=MAX_BYTES)},
    )
    events = [large_purchase(i, items=1000) for i in range(60)]  # about 0.85 MB each
    enqueue_one_by_one(stack, events, "gravity")
    decoding = decoding_peak(stack, "gravity")

    report, peak, drainer = measured_drain(stack, "gravity")

    assert_bounded(peak, decoding, report)
    assert drainer.held_cap == CAP
    assert report.read == 60 and sink_events(counted) == 60, report
    assert stack.settled("gravity") and stack.dead_letters() == []


def test_a_take_over_of_large_events_stays_within_the_byte_cap(make_stack, counted):
    """An earlier drain read everything and died: its heir takes the entries over by bytes."""
    stack = make_stack(
        relay=RELAY,
        destinations={"gravity": destination("gravity_capi", vendor_url(counted, "gravity_capi"), max_bytes=MAX_BYTES)},
    )
    enqueue_one_by_one(stack, [large_purchase(i, items=1000) for i in range(40)], "gravity")
    stream = PartitionStream(stack.redis, stack.keys, "gravity")
    dead = consumer_name(0, uuid.uuid4().hex)
    assert len(stream.read(dead, 1000)) == 40  # all of them held by a consumer that is gone
    decoding = decoding_peak(stack, "gravity")

    report, peak, _ = measured_drain(stack, "gravity")

    assert_bounded(peak, decoding, report)
    assert report.reclaimed == 40 and sink_events(counted) == 40, report
    assert stack.settled("gravity")


def test_open_chunks_of_many_users_stay_within_the_byte_cap(make_stack, counted):
    """Gravity Field sends one user per request: each user's chunk waits for the flush deadline
    unless the bytes held across users make the oldest leave first."""
    stack = make_stack(
        relay=RELAY,
        destinations={"field": destination("gravity_field", vendor_url(counted, "gravity_field"), max_bytes=MAX_BYTES)},
    )
    enqueue_one_by_one(stack, [large_purchase(i, items=250) for i in range(80)], "field")  # 80 users, ~0.2 MB
    decoding = decoding_peak(stack, "field")

    report, peak, _ = measured_drain(stack, "field")

    assert_bounded(peak, decoding, report)
    wait_for(lambda: sink_events(counted) == 80, timeout=10, what="80 events at the sink")
    assert stack.settled("field")


def test_the_batcher_lets_the_oldest_chunks_go_when_its_groups_hold_too_many_bytes():
    batcher = Batcher(max_events=50, max_bytes=MAX_BYTES, envelope_size=lambda group: 10, max_held_bytes=1000)
    ready = []
    for i in range(10):  # ten groups of 300 bytes: no chunk is full, all would wait for the deadline
        ready += batcher.add(f"user-{i}", b"x" * 300, f"s:{i}-0", enqueued_at=float(i))
        assert batcher.held_bytes <= 1000
    assert [chunk.group for chunk in ready] == [f"user-{i}" for i in range(7)]  # oldest first
    assert batcher.held == 3 and batcher.held_bytes == 900
