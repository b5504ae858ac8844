"""``Relay.explain`` and ``conversion-relay explain``: what an event would become at each
destination, checked like ``enqueue``, with nothing stored in Redis and nothing sent.

The expected bodies are built from the adapters' documented shapes by hand (the CAPI event as
the vendor's page prints it), not by calling the code under test.
"""

from __future__ import annotations

import json

import pytest

from conversion_relay.errors import EventValidationError
from tests.conftest import API_KEY, KEY_ENV, gravity_destination, tracify_destination
from tests.test_cli import run

ORDER = {
    "event_name": "Purchase",
    "event_id": "order-123",
    "event_time": 1718973400,
    "event_source_url": "https://shop.example/checkout",
    "user_data": {"external_id": ["42"], "client_user_agent": "Mozilla/5.0"},
    "custom_data": {"value": 99.99, "currency": "EUR", "order_id": "123"},
}
PAGE_VIEW = {"event_name": "PageView", "event_id": "pv-1", "event_time": 1718973400}


@pytest.fixture
def explained(make_stack, sandbox, gravity, tracify):
    """A stack with the CAPI twice (behaviour events skipped by default, and sent), Tracify, and
    a disabled destination; returns it after checking the test left Redis and the sandbox alone."""
    stack = make_stack(
        destinations={
            "gravity": gravity_destination(sandbox),
            "gravity_all": gravity_destination(sandbox, skip_events=[]),
            "tracify": tracify_destination(sandbox),
            "off": gravity_destination(sandbox, enabled=False),
        }
    )
    before = set(stack.redis.keys("*"))
    yield stack
    assert set(stack.redis.keys("*")) == before, "explain stored something in Redis"
    assert gravity.requests == [] and tracify.requests == [], "explain sent something to the sandbox"


def by_destination(explanation: dict) -> dict[str, dict]:
    (event,) = explanation["events"]
    return {d["destination"]: d for d in event["destinations"]}


def test_explain_shows_the_request_of_a_sending_destination_and_why_others_skip(explained):
    result = by_destination(explained.relay.explain(ORDER).as_dict())

    assert list(result) == ["gravity", "gravity_all", "tracify", "off"]
    (request,) = result["gravity"]["requests"]
    assert request["method"] == "POST"
    assert request["path"] == "/gravity-capi/gateway/events"
    assert request["body"] == {"data": [{**ORDER, "action_source": "website"}]}
    assert request["size"] == len(json.dumps(request["body"], separators=(",", ":")))
    assert result["gravity"]["action"] == "send"
    # Tracify needs the end user's IP address, which the order does not carry.
    assert result["tracify"]["action"] == "skip" and result["tracify"]["reason"]
    assert result["tracify"]["requests"] == []
    assert result["off"] == {"destination": "off", "vendor": "gravity_capi", "action": "skip",
                             "reason": "disabled", "requests": []}  # fmt: skip
    assert API_KEY not in json.dumps(result)


def test_explain_names_skip_events_as_the_reason(explained):
    result = by_destination(explained.relay.explain([PAGE_VIEW]).as_dict())

    assert result["gravity"]["action"] == "skip" and result["gravity"]["reason"] == "skip_events"
    (request,) = result["gravity_all"]["requests"]
    assert request["body"] == {"data": [{**PAGE_VIEW, "action_source": "website", "user_data": {}}]}


def test_explain_refuses_an_invalid_event_as_enqueue_does(explained):
    bad = {"event_name": "Purchase", "custom_data": {"currency": "EURO"}}
    with pytest.raises(EventValidationError) as explained_error:
        explained.relay.explain([bad])
    with pytest.raises(EventValidationError) as enqueue_error:
        explained.relay.enqueue([bad])
    assert str(explained_error.value) == str(enqueue_error.value)
    assert "event 0: custom_data.currency: Not an ISO 4217 currency code" in str(explained_error.value)


def test_explain_for_chosen_destinations_refuses_a_disabled_one_as_enqueue_does(explained):
    result = explained.relay.explain(ORDER, destinations=["gravity"]).as_dict()
    assert [d["destination"] for d in result["events"][0]["destinations"]] == ["gravity"]
    with pytest.raises(EventValidationError, match=r"destinations: 'off' is disabled"):
        explained.relay.explain(ORDER, destinations=["off"])


def test_cli_explain_prints_the_request_and_the_skip_reasons(explained, tmp_path):
    path = tmp_path / "order.json"
    path.write_text(json.dumps(ORDER))
    done = run(explained.env, "explain", str(path))

    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "event 0: Purchase order-123"
    assert lines[1] == "  gravity (gravity_capi): 1 request"
    assert lines[2].startswith("    POST /gravity-capi/gateway/events (") and lines[2].endswith(" bytes)")
    assert json.loads(lines[3]) == {"data": [{**ORDER, "action_source": "website"}]}
    assert "  off (gravity_capi): skipped (disabled)" in lines
    assert any(line.startswith("  tracify (tracify): skipped (") for line in lines)
    assert API_KEY not in done.stdout


def test_cli_explain_needs_neither_redis_nor_an_api_key(explained, tmp_path):
    path = tmp_path / "order.json"
    path.write_text(json.dumps(ORDER))
    done = run({**explained.env, "REDIS_URL": None, KEY_ENV: None}, "explain", str(path))

    assert done.code == 0, done.stderr
    assert done.stdout.splitlines()[1] == "  gravity (gravity_capi): 1 request"


def test_cli_explain_json_for_one_destination(explained):
    done = run(explained.env, "explain", "-", "--json", "--destination", "gravity", stdin=json.dumps(PAGE_VIEW))

    assert done.code == 0, done.stderr
    assert by_destination(json.loads(done.stdout)) == {
        "gravity": {
            "destination": "gravity",
            "vendor": "gravity_capi",
            "action": "skip",
            "reason": "skip_events",
            "requests": [],
        }  # fmt: skip
    }


def test_cli_explain_of_an_invalid_event_is_one_line_naming_the_field(explained):
    done = run(explained.env, "explain", "-", stdin='{"event_name": "Purchase", "event_time": "soon"}')

    assert done.code == 1
    assert "event_time" in done.error and done.stdout == ""
