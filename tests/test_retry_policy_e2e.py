"""The retry horizon, the attempt limit, and long waits parked in Redis rather than the broker."""

from __future__ import annotations

import json
import time

import redis

from tests.support import wait_for


def events(n):
    return [{"event_name": "Lead", "event_id": f"lead-{i}"} for i in range(n)]


def test_retries_stop_at_the_horizon_and_dead_letter_the_batch(make_stack, gravity):
    stack = make_stack(relay={"retry_horizon_seconds": 1.5, "backoff_base_seconds": 0.1, "backoff_cap_seconds": 0.3})
    stack.start_worker()
    gravity.configure(fail_all_status=503)
    stack.relay.enqueue(events(4))
    letter = wait_for(lambda: stack.dead_letters(), timeout=20, what="the batch to exhaust its retries")[0]
    stack.wait_settled()
    assert letter.reason == "retries_exhausted"
    assert letter.status == 503
    assert letter.excerpt.startswith("http_503")
    assert letter.attempts == len(gravity.requests) >= 2
    assert 1.5 <= letter.last_failed_at - letter.first_failed_at < 3.0
    assert len(letter.parts) == 4


def test_max_attempts_limits_the_requests(make_stack, gravity):
    stack = make_stack(relay={"max_attempts": 3})
    stack.start_worker()
    gravity.configure(fail_all_status=500)
    stack.relay.enqueue(events(2))
    letter = wait_for(lambda: stack.dead_letters(), timeout=20)[0]
    stack.wait_settled()
    assert letter.reason == "retries_exhausted" and letter.attempts == 3
    assert [r["status"] for r in gravity.requests] == [500, 500, 500]


def test_a_long_retry_after_waits_in_redis_not_on_a_broker_countdown(make_stack, gravity):
    stack = make_stack(relay={"visibility_timeout_seconds": 25.0})
    stack.start_worker()
    gravity.configure(statuses=[{"status": 429, "retry_after": "7200"}])
    stack.relay.enqueue(events(3))
    waiting = wait_for(lambda: stack.admin.status()["gravity"]["waiting"], what="the batch to wait")[0]
    now = time.time()
    # Retry-After is capped at max_retry_after_seconds (3600 s), far beyond the visibility timeout.
    assert 3500 < waiting["next_attempt_at"] - now <= 3600
    assert stack.admin.status()["gravity"]["backing_off_until"] == waiting["next_attempt_at"]
    time.sleep(1.0)
    broker = redis.Redis.from_url(stack.env["CONVERSION_RELAY_BROKER_URL"])
    scheduled = [json.loads(m) for m in broker.hvals("unacked")]
    assert not [m for m in scheduled if m[0]["headers"].get("eta")], "a task waits on a broker countdown"
    assert broker.llen("relay.gravity") == 0
    assert len(gravity.requests) == 1
