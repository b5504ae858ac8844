"""``conversion-relay metrics``: scraped over HTTP from the real command while a worker runs, and
parsed with prometheus-client's own parser; the numbers are the relay's own status."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conversion_relay.ops.metrics import metrics_text
from tests.conftest import gravity_destination
from tests.support import wait_for


def purchase(event_id: str) -> dict[str, object]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "user_data": {"em": [f"{event_id}@example.com"]},
        "custom_data": {"value": 10.0, "currency": "EUR"},
    }


@pytest.fixture
def served(make_stack, sandbox, gravity):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    process = subprocess.Popen(
        [sys.executable, "-m", "conversion_relay.cli", "metrics", "--port", "0"],
        env=stack.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stderr.readline()
    assert "serving http://" in line, line
    url = line.split("serving ", 1)[1].strip()
    yield stack, url
    process.terminate()
    process.wait(timeout=10)
    process.stderr.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_a_scrape_during_a_run_reports_what_status_reports(served, gravity):
    stack, url = served
    gravity.configure(event_error_prefix="bad-")
    stack.relay.enqueue([purchase(f"ok-{i}") for i in range(30)] + [purchase("bad-1"), purchase("bad-2")])
    stack.relay.enqueue([{"event_name": "Search", "event_id": "s-1", "custom_data": {"search_string": "x"}}])

    before = scrape(url)  # no worker yet: everything is backlog
    assert value(before, "conversion_relay_redis_up") == 1
    assert value(before, "conversion_relay_workers") == 0
    assert value(before, "conversion_relay_backlog_events", destination="gravity", state="unread") == 33
    assert value(before, "conversion_relay_events_total", destination="gravity", outcome="accepted") == 33
    assert value(before, "conversion_relay_oldest_undelivered_age_seconds", destination="gravity") >= 0

    stack.start_worker()
    wait_for(lambda: value(scrape(url), "conversion_relay_workers") >= 1, what="a worker heartbeat in the metrics")
    stack.wait_settled()
    after = scrape(url)
    status = stack.admin.status()["gravity"]
    for outcome, count in status["counters"].items():
        if outcome not in ("requests", "split"):
            assert value(after, "conversion_relay_events_total", destination="gravity", outcome=outcome) == count
    assert value(after, "conversion_relay_requests_total", destination="gravity") == status["counters"]["requests"]
    assert status["counters"]["delivered"] == 30 and status["counters"]["dead_lettered"] == 2
    assert (
        value(
            after, "conversion_relay_dead_lettered_events_total", destination="gravity", reason="vendor_rejected_event"
        )
        == 2
    )
    assert value(after, "conversion_relay_dead_letters", destination="gravity") == status["dead_letters"] == 1
    assert status["skipped_by_reason"]
    for reason, count in status["skipped_by_reason"].items():
        assert value(after, "conversion_relay_skipped_events_total", destination="gravity", reason=reason) == count
    for state in ("unread", "in_flight", "waiting"):
        assert value(after, "conversion_relay_backlog_events", destination="gravity", state=state) == 0
    assert value(after, "conversion_relay_oldest_undelivered_age_seconds", destination="gravity") == 0
    requests = status["counters"]["requests"]
    assert requests >= 1
    assert value(after, "conversion_relay_request_duration_seconds_count", destination="gravity") == requests
    assert value(after, "conversion_relay_batch_size_events_count", destination="gravity") == requests
    assert value(after, "conversion_relay_batch_size_events_sum", destination="gravity") == 32
    assert (
        value(after, "conversion_relay_request_duration_seconds_bucket", destination="gravity", le="+Inf") == requests
    )
    assert value(after, "conversion_relay_last_success_timestamp_seconds", destination="gravity") > 0
    assert value(after, "conversion_relay_backing_off", destination="gravity") == 0


def test_a_scrape_while_redis_is_out_of_reach_says_so(make_stack, sandbox, gravity):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    unreachable = dataclasses.replace(stack.settings, redis_url="redis://127.0.0.1:1/0")
    samples = {
        s.name: s.value for f in text_string_to_metric_families(metrics_text(unreachable).decode()) for s in f.samples
    }
    assert samples == {"conversion_relay_redis_up": 0}
