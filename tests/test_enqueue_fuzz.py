"""Thousands of malformed, oversized, wrongly typed, deeply nested and non-UTF-8 payloads at
``Relay.enqueue`` and at the ``relay.enqueue`` task: each is refused with ``EventValidationError``
or stored exactly as validated, the worker never dies, and nothing else in flight is lost.

The task's code runs in this process for the thousands (:mod:`tests.ingest_task`: kombu's JSON
codec, then Celery's ``apply``), and through a real worker, with raw messages no Celery client
would write, for a few dozen.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import uuid
from typing import Any

import orjson
import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import event as outcome
from hypothesis import strategies as st

from conversion_relay import EventValidationError
from conversion_relay.schemas.untrusted import MAX_DEPTH
from conversion_relay.worker.guard import MAX_MESSAGE_DEPTH, nested_deeper_than
from tests.conftest import gravity_destination
from tests.ingest_task import ingest_for, run_enqueue_task
from tests.support import wait_for

#: The strategies' own repr is large (sampled strategies of strategies); hypothesis warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

EMAIL = "jane.doe@example.org"
#: Given only in user_data.ph: phone numbers in free text cannot be recognised, and are not refused.
PHONE = "+49 176 98765432"
PLAINTEXT = (EMAIL, "jane.doe%40example.org", PHONE, PHONE.replace(" ", ""), "17698765432")
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=False, database=None)

# --- what arrives ----------------------------------------------------------------------------------

surrogates = st.characters(exclude_categories=(), min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.one_of(surrogates, st.characters()), max_size=6),
    st.sampled_from([EMAIL, f"mail {EMAIL}", "https://shop.example/?e=jane.doe%40example.org", "+49 30 1234567",
                     "12", "", " ", "EUR", "EURO", "Purchase", "2024-06-21T12:36:40Z", "2024-06-21T12:36:40"]),
)  # fmt: skip
numbers = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -5, 1718973400, 1718973400000, 10**400, float("nan"), float("inf")]),
)
keys = st.one_of(texts, st.sampled_from(["email", "Phone", "first_name", "name", "em", "screen", "width", "value"]))
json_scalars = st.one_of(st.none(), st.booleans(), numbers, texts)


def weighted(*choices: tuple[st.SearchStrategy[Any], int]) -> st.SearchStrategy[Any]:
    """One of the strategies, each as often as its weight (``one_of`` takes a repeated
    strategy once, so repeating it does not weigh it)."""
    return st.sampled_from([strategy for strategy, weight in choices for _ in range(weight)]).flatmap(lambda s: s)


def nested(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"n": value}
    return value


def json_values(scalars: st.SearchStrategy[Any], key: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Any value: mostly small trees, sometimes nested past MAX_DEPTH (up to 1,200 levels) or
    large (up to 1.2 MB of text)."""
    tree = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=4), max_leaves=12
    )
    deep = st.integers(MAX_DEPTH - 3, 1200).map(nested)
    large = st.sampled_from([1000, 3000, 300_000, 1_200_000]).map(lambda n: "x" * n)
    return weighted((tree, 6), (deep, 1), (large, 1))


#: What a JSON message can carry (the task), and what Python callers may pass besides.
json_anything = json_values(json_scalars, keys)
py_anything = json_values(
    st.one_of(json_scalars, st.binary(max_size=6), st.tuples(st.integers()), st.just(object())),
    st.one_of(keys, st.integers(), st.just(("a", 1))),
)


def events(anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    valid_or = lambda valid: weighted((valid, 4), (anything, 1))  # noqa: E731 - mostly valid
    item = st.fixed_dictionaries(
        {"id": valid_or(st.sampled_from(["SKU-1", 7]))},
        optional={"quantity": valid_or(st.integers(0, 5)), "item_price": valid_or(numbers), "title": valid_or(texts)},
    )
    user_data = st.fixed_dictionaries(
        {},
        optional={
            "em": valid_or(st.sampled_from([EMAIL, [EMAIL], "a" * 64, "not an address"])),
            "ph": valid_or(st.sampled_from([PHONE, "0176 98765432", "12", "+49 176 987654329"])),
            "fn": valid_or(texts),
            "external_id": valid_or(st.lists(texts, max_size=3)),
            "client_ip_address": valid_or(st.sampled_from(["203.0.113.7", "::ffff:203.0.113.7", "999.1.1.1"])),
            "visitor_id": valid_or(texts),
        },
    )
    event = st.fixed_dictionaries(
        {"event_name": valid_or(st.sampled_from(["Purchase", "lead", "PageView", "Custom"]))},
        optional={
            "event_id": valid_or(st.sampled_from(["e-1", 42, " "])),
            "event_time": valid_or(st.integers(1_600_000_000, 1_700_000_000)),
            "event_source_url": valid_or(texts),
            "user_data": valid_or(user_data),
            "client_context": st.one_of(
                st.dictionaries(keys, json_scalars, max_size=4), st.dictionaries(keys, anything, max_size=3), anything
            ),
            "custom_data": valid_or(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "value": valid_or(numbers),
                        "currency": valid_or(st.sampled_from(["EUR", "usd", "EURO"])),
                        "contents": valid_or(st.lists(item, max_size=3)),
                    },
                )
            ),
            "page": valid_or(
                st.fixed_dictionaries(
                    {}, optional={"type": st.sampled_from(["product", "CART"]), "data": st.lists(texts, max_size=3)}
                )
            ),
            "test_event_code": valid_or(st.just("TEST1")),
        },
    )
    return weighted((event, 4), (st.lists(event, max_size=4), 2), (anything, 1))


#: Mostly the default or a good list, so that enough calls get as far as storing.
destinations = weighted(
    (st.none(), 6),
    (st.just(["gravity"]), 1),
    (st.just(["gravity", "small"]), 1),
    (st.lists(st.sampled_from(["gravity", "small", "paused", "nowhere", EMAIL]), max_size=3), 1),
    (json_anything, 1),
)


# --- what must hold ----------------------------------------------------------------------------------


def streams(stack: Any) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in stack.settings.destinations:
        out[name] = [orjson.loads(fields[b"c"]) for _, fields in stack.redis.xrange(stack.keys.stream(name))]
    return out


def without_nulls(value: Any) -> Any:
    """A value as it is stored: nulls left out, tuples written as lists."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [without_nulls(v) for v in value if v is not None]
    return value


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(map(finite, value.values()))
    if isinstance(value, list):
        return all(map(finite, value))
    return True


def assert_outcome(stack: Any, given_events: Any, given_destinations: Any, ids: list[str] | None, errors: Any) -> None:
    """Refused: nothing stored and no plaintext in the messages.  Accepted: every event stored
    once per target, as validated (finite, at most MAX_DEPTH deep, client_context as given)."""
    stored = streams(stack)
    outcome("refused" if ids is None else f"stored {len(ids)}")
    if ids is None:
        assert errors, "refused without saying why"
        assert all(not entries for entries in stored.values()), "a refused call stored events"
        shown = repr(errors).lower()
        assert not [p for p in PLAINTEXT if p.lower() in shown], "a message repeats personal data"
        return
    given_list = [given_events] if isinstance(given_events, dict) else list(given_events)
    targets = ["gravity", "small"] if given_destinations is None else given_destinations  # the enabled ones
    targets = [targets] if isinstance(targets, str) else targets
    for name, entries in stored.items():
        expected = ids if name in targets else []
        assert [e["event_id"] for e in entries] == expected, name
        for given_event, event in zip(given_list, entries):
            text = orjson.dumps(event).decode().lower()
            assert not [p for p in PLAINTEXT if p.lower() in text], "plaintext stored"
            assert finite(event) and depth(event) <= MAX_DEPTH
            if given_event.get("client_context") is not None:
                assert event["client_context"] == without_nulls(given_event["client_context"])


@pytest.fixture(scope="module")
def fuzz_stack(redis_server, sandbox, tmp_path_factory):
    from tests.conftest import FAST_RELAY, Stack

    stack = Stack(
        redis_server,
        tmp_path_factory.mktemp("fuzz"),
        {**FAST_RELAY, "enqueue_dedup_seconds": 0},
        {
            "gravity": gravity_destination(sandbox),
            "small": gravity_destination(sandbox, max_bytes=4000),
            "paused": gravity_destination(sandbox, enabled=False),
        },
    )
    yield stack
    stack.close()


@settings(FUZZ, max_examples=1500)
@given(events(py_anything), destinations)
def test_relay_enqueue_refuses_or_stores_exactly_whatever_it_is_given(fuzz_stack, given_events, given_destinations):
    fuzz_stack.reset_data()
    try:
        ids = fuzz_stack.relay.enqueue(given_events, destinations=given_destinations)
    except EventValidationError as exc:
        assert_outcome(fuzz_stack, given_events, given_destinations, None, f"{exc}\n{exc.messages!r}")
    else:
        assert_outcome(fuzz_stack, given_events, given_destinations, ids, None)


@settings(FUZZ, max_examples=1000)
@given(events(json_anything), destinations)
def test_the_enqueue_task_refuses_or_stores_exactly_whatever_a_message_carries(
    fuzz_stack, monkeypatch_module, given_events, given_destinations
):
    fuzz_stack.reset_data()
    try:
        decoded = json.loads(json.dumps(given_events))
    except (RecursionError, ValueError):  # no JSON encoder writes it: no message can carry it
        return
    kwargs = {} if given_destinations is None else {"destinations": given_destinations}
    result = run_enqueue_task(monkeypatch_module, given_events, **kwargs)
    ids = result.get("event_ids") if result["accepted"] or "errors" not in result else None
    assert_outcome(fuzz_stack, decoded, given_destinations, ids, result.get("errors"))


def depth_ok(value: Any) -> bool:
    try:
        copy.deepcopy(value)
    except RecursionError:
        return False
    return True


@pytest.fixture(scope="module")
def monkeypatch_module(fuzz_stack):
    with pytest.MonkeyPatch.context() as patch:
        yield ingest_for(fuzz_stack, patch)


# --- through a real worker ---------------------------------------------------------------------------


def raw_message(body: bytes, **headers: Any) -> str:
    """A Celery protocol 2 message for relay.enqueue as any program may write it to the list."""
    task_id = str(uuid.uuid4())
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "relay.enqueue", "id": task_id, "root_id": task_id, "parent_id": None,
                    "retries": 0, **headers},
        "properties": {"correlation_id": task_id, "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                       "delivery_info": {"exchange": "relay.ingest", "routing_key": "relay.ingest"},
                       "delivery_tag": str(uuid.uuid4())},
    }  # fmt: skip
    return json.dumps(message)


def celery_body(args: Any, kwargs: Any) -> bytes:
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return json.dumps([args, kwargs, embed]).encode()


#: Messages no Celery client writes: bodies that are not UTF-8, not JSON, not a protocol 2 body,
#: JSON nested past what a decoder takes, arguments the task does not take; headers of types
#: Celery cannot read (each of these used to stop the worker: conversion_relay/worker/guard.py).
LEAD = celery_body([[{"event_name": "Lead"}]], {})
RAW_HEADERS = [
    {"task": ["relay.enqueue"]},
    {"id": {"x": 1}},
    {"stamped_headers": 5},
    {"retries": "x"},
    {"timelimit": [1]},
    {"task": "relay.unknown"},
    {"stamps": {"n": nested(600)}},
]
RAW_BODIES = [
    b"\xff\xfe\xfa not utf-8",
    b'[[{"event_name": "Lead\xff"}], {}, {}]',
    b"{not json",
    b"[" * 100_000 + b"]" * 100_000,
    b'[[{"event_name": "Lead", "client_context": ' + b'{"n": ' * 5000 + b"1" + b"}" * 5000 + b"}], {}, {}]",
    b'"just a string"',
    celery_body([], {}),
    celery_body([[{"event_name": "Lead"}], "gravity", "extra"], {}),
    celery_body([[{"event_name": "Lead"}]], {"destinations": ["gravity"], "priority": "high"}),
    celery_body([[{"event_name": "Lead", "event_time": "NaN"}]], {}).replace(b'"NaN"', b"NaN"),
    celery_body([[{"event_name": "Lead", "client_context": {"s": "\\ud800"}}]], {}).replace(b"\\\\ud800", b"\\ud800"),
    # JSON the decoder reads but too deep to pickle for the pool: it used to stop the consumer.
    celery_body([[{"event_name": "Lead", "client_context": nested(600)}]], {}),
    celery_body([[{"event_name": "Lead"}]], {"destinations": nested(600)}),
]


#: Queue items that are not kombu messages at all: kombu's transport reads these before Celery
#: (each used to stop the worker: RelayRedisChannel in conversion_relay/worker/broker.py).
RAW_ITEMS = [
    "{not json at all",
    '"a string"',
    "[1, 2, 3]",
    json.dumps({"body": "e30=", "headers": {"task": "relay.enqueue"}}),
    raw_message(LEAD).replace('"body": "', '"body": "!!! not base64 ', 1),
    "[" * 5000 + "]" * 5000,
]


def test_the_guard_passes_every_body_an_acceptable_event_makes_and_walks_any_depth():
    deepest = {"event_name": "Lead", "client_context": nested(MAX_DEPTH - 1)}
    assert depth(deepest) == MAX_DEPTH
    body = json.loads(celery_body([[deepest]], {"destinations": ["gravity"]}))
    assert not nested_deeper_than(body, MAX_MESSAGE_DEPTH), "the task, not the guard, names a too-deep field"
    assert nested_deeper_than(nested(MAX_MESSAGE_DEPTH + 1), MAX_MESSAGE_DEPTH)
    assert not nested_deeper_than(nested(MAX_MESSAGE_DEPTH), MAX_MESSAGE_DEPTH)
    assert nested_deeper_than(nested(50_000), MAX_MESSAGE_DEPTH)  # no recursion of its own


def test_the_worker_survives_hostile_messages_and_loses_nothing_in_flight(stack, gravity):
    worker = stack.workers[0]
    client = Celery(broker=stack.env["CONVERSION_RELAY_BROKER_URL"])
    client.conf.update(task_serializer="json", accept_content=["json"])
    broker = redis.Redis.from_url(stack.env["CONVERSION_RELAY_BROKER_URL"])
    kept: list[str] = []

    def send_valid(n: int) -> None:
        event = {"event_name": "Purchase", "event_id": f"keep-{n}", "custom_data": {"value": 1.0, "currency": "EUR"}}
        client.send_task("relay.enqueue", args=[[event]], kwargs={"destinations": ["gravity"]}, queue="relay.ingest")
        kept.append(event["event_id"])

    task_ids: list[str] = []
    for n, body in enumerate(RAW_BODIES):
        send_valid(n)
        broker.lpush("relay.ingest", raw_message(body))
    for headers in RAW_HEADERS:
        send_valid(len(kept))
        broker.lpush("relay.ingest", raw_message(LEAD, **headers))
    for item in RAW_ITEMS:
        send_valid(len(kept))
        broker.lpush("relay.ingest", item)

    @settings(FUZZ, max_examples=40)
    @given(events(json_anything).filter(lambda e: depth_ok(e) and depth(e) < 200), destinations)
    def through_the_worker(given_events: Any, given_destinations: Any) -> None:
        try:
            body = celery_body([given_events], {"destinations": given_destinations})
        except ValueError:
            return
        message = raw_message(body)
        broker.lpush("relay.ingest", message)
        task_ids.append(json.loads(message)["headers"]["id"])
        send_valid(len(kept))

    through_the_worker()
    send_valid(len(kept))
    wait_for(lambda: set(kept) <= {e["event_id"] for e in gravity.events}, timeout=60, what="every valid event")

    def settled(task_id: str) -> bool:
        """The task ran (and stored or refused the events), or the guard refused the message."""
        log = worker.output()
        return f"relay.enqueue[{task_id}] succeeded" in log or f"A message {task_id} was refused" in log

    wait_for(lambda: all(map(settled, task_ids)), timeout=60, what="every fuzzed message's outcome")
    log = worker.output()
    assert worker.proc.poll() is None, "the worker died"
    unexpected = [line for line in log.splitlines() if "raised unexpected" in line or "Unrecoverable" in line]
    assert not unexpected, unexpected[:3]
    assert not [p for p in PLAINTEXT if p in log], "plaintext in the worker's log"
    assert sorted(e["event_id"] for e in gravity.events if e["event_id"].startswith("keep-")) == sorted(kept)
    client.close()
    broker.close()
