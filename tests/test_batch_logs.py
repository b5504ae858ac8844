"""One structured line per batch outcome in a real worker's output, never a payload."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from typing import Any

from conversion_relay.engine.batchlog import batch_fields, outcome_kind
from conversion_relay.outcomes import DeadLetterReason, Rejected, RetryLater
from conversion_relay.vendors.batching import Chunk
from conversion_relay.worker.observability import JsonFormatter, SecretFilter
from tests.support import wait_for

IP = "198.51.100.23"
FIELDS = {"destination", "events", "bytes", "status", "attempt", "duration_ms", "outcome"}


def event(i: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": f"logged-{i}",
        "user_data": {"em": [f"logged{i}@example.com"], "client_ip_address": IP},
        "custom_data": {"value": 10.0 + i, "currency": "EUR", "order_id": f"order-{i}"},
    }


def never_logged(n: int) -> list[str]:
    """Event ids, e-mails (plain and hashed), the IP and payload keys: none belongs in a log."""
    found = [IP, '"user_data"', "custom_data", "client_ip_address"]
    for i in range(n):
        email = f"logged{i}@example.com"
        found += [f"logged-{i}", email, hashlib.sha256(email.encode()).hexdigest()]
    return found


def json_batch_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for raw in output.splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line["logger"] == "conversion_relay.delivery" and line["message"].startswith("batch "):
                lines.append(line)
    return lines


def plain_batch_lines(output: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", m)) for m in re.findall(r"\] batch (destination=.*)$", output, re.M)]


def test_json_lines_one_per_batch_outcome(make_stack, gravity):
    stack = make_stack(relay={"log_format": "json"}, destinations=None)
    worker = stack.start_worker()
    stack.relay.enqueue([event(i) for i in range(12)], destinations=["gravity"])
    wait_for(lambda: stack.counters()["delivered"] == 12, what="12 delivered")
    gravity.configure(fail_all_status=401)
    stack.relay.enqueue([event(i) for i in range(12, 15)], destinations=["gravity"])
    wait_for(lambda: stack.counters()["dead_lettered"] == 3, what="3 dead-lettered")
    wait_for(lambda: len(json_batch_lines(worker.output())) == len(gravity.requests), what="a line per request")

    output = worker.output()
    assert not re.search(r"^\[\d{4}-", output, re.M), "no log line in Celery's plain format"
    lines = json_batch_lines(output)
    accepted = [line for line in lines if line["outcome"] == "accepted"]
    dead = [line for line in lines if line["outcome"] == "dead_letter"]
    assert sum(line["events"] for line in accepted) == 12
    assert sum(line["events"] for line in dead) == 3
    assert all(line["status"] == 200 for line in accepted)
    assert all(line["status"] == 401 and line["reason"] == "http_401" for line in dead)
    for line in lines:
        assert FIELDS <= set(line), line
        assert line["destination"] == "gravity" and line["attempt"] == 1 and line["bytes"] > 0
        assert line["level"] == "INFO"
    for text in never_logged(15):
        assert text not in output


def test_plain_lines_are_key_value(make_stack, gravity):
    stack = make_stack()
    worker = stack.start_worker()
    gravity.configure(statuses=[503])
    stack.relay.enqueue([event(i) for i in range(4)], destinations=["gravity"])
    wait_for(lambda: stack.counters()["delivered"] == 4, what="4 delivered after one retry")
    wait_for(lambda: len(plain_batch_lines(worker.output())) == 2, what="two lines: the retry and the delivery")

    output = worker.output()
    retry, accepted = plain_batch_lines(output)
    assert FIELDS <= set(retry) and FIELDS <= set(accepted)
    assert (retry["outcome"], retry["status"], retry["attempt"], retry["reason"]) == ("retry", "503", "1", "http_503")
    assert (accepted["outcome"], accepted["status"], accepted["attempt"]) == ("accepted", "200", "2")
    assert not any(raw.startswith("{") for raw in output.splitlines())
    for text in never_logged(4):
        assert text not in output


def test_a_batch_past_its_retries_is_logged_as_dead_with_its_last_reason():
    chunk = Chunk(group="events", parts=[b'{"a":1}', b'{"b":2}'], attempts=4)
    outcome = RetryLater(reason="http_503", status=503, excerpt="busy, said the vendor")
    kind = outcome_kind(outcome, {DeadLetterReason.RETRIES_EXHAUSTED: (2, 1)})
    fields = batch_fields("gravity", chunk, outcome, request_ms=12, http_status=503, kind=kind)
    assert fields == {
        "destination": "gravity",
        "events": 2,
        "bytes": 14,
        "status": 503,
        "attempt": 5,
        "duration_ms": 12,
        "outcome": "dead_letter",
        "reason": "retries_exhausted",
        "last_reason": "http_503",
    }
    assert outcome_kind(outcome, {}) == "retry"
    never_sent = Rejected(reason=DeadLetterReason.MAPPING_ERROR, excerpt="KeyError")
    fields = batch_fields("gravity", chunk, never_sent, request_ms=0, http_status=None, kind="dead_letter")
    assert (fields["status"], fields["reason"]) == ("mapping_error", "mapping_error")


def test_json_lines_are_masked_by_the_secret_filter():
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretFilter(["sk-live-123456"]))
    logger = logging.getLogger("tests.batch_logs.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("vendor said %s", "bad key sk-live-123456", extra={"relay_fields": {"events": 3}})
    finally:
        logger.removeHandler(handler)
    line = json.loads(handler.stream.getvalue())
    assert line["message"] == "vendor said bad key [redacted]" and line["events"] == 3
    assert line["level"] == "WARNING" and line["logger"] == "tests.batch_logs.json"
