"""Each Redis format has one owner, and the names in it are enums (issue 10).

Counters are :class:`~conversion_relay.store.stats.Counter` members and dead-letter reasons
:data:`~conversion_relay.outcomes.Reason` values: a misspelt name raises where it is written
(Python or Lua) instead of starting a counter no report shows or a filter that selects nothing.
Waiting batches and dead letters are written and read by one codec each
(:mod:`conversion_relay.store.records`), which also writes the field list of the replay script.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import pytest

from conversion_relay.outcomes import (
    DeadLetterReason,
    HttpReason,
    Rejected,
    dead_letter_reason,
    http_reason,
)
from conversion_relay.store import backlog, deadletter, records, stats, stream, waiting
from conversion_relay.store.deadletter import DeadLetter, DeadLetterStore
from conversion_relay.store.keys import Keys
from conversion_relay.store.selection import InvalidSelection, Selection
from conversion_relay.store.stats import Counter
from conversion_relay.store.waiting import WaitingBatch, WaitingBatches
from conversion_relay.vendors.base import Skip
from tests.conftest import gravity_destination
from tests.test_cli import run
from tests.test_erase import drain_once, groups
from tests.test_replay_reasons import purchase

PACKAGE = Path(__file__).resolve().parents[1] / "conversion_relay"
KEYS = Keys("cr")


# --- counters ---------------------------------------------------------------------------------


def test_a_misspelt_counter_raises_at_once_and_names_the_known_ones(data):
    pipe = data.pipeline()
    with pytest.raises(ValueError, match="Counter.DELIVERED") as refused:
        stats.count(pipe, KEYS, "gravity", "deliverd")  # type: ignore[arg-type]
    assert "'deliverd' is not a Counter" in str(refused.value)
    with pytest.raises(ValueError, match="not a Counter"):
        stats.count(pipe, KEYS, "gravity", "delivered")  # type: ignore[arg-type]  # the enum, not a string
    with pytest.raises(ValueError, match="'deliverd' is not one the relay keeps; known: accepted, delivered"):
        Counter("deliverd")
    pipe.execute()
    assert data.hgetall(KEYS.stats("gravity")) == {}
    stats.count(pipe, KEYS, "gravity", Counter.DELIVERED, 2)
    pipe.execute()
    assert data.hgetall(KEYS.stats("gravity")) == {b"delivered": b"2"}
    assert stats.read(data, KEYS, "gravity")["delivered"] == stats.value(data, KEYS, "gravity", Counter.DELIVERED) == 2


def test_a_lua_script_naming_an_unknown_stats_field_fails_when_it_is_built():
    assert stats.lua("redis.call('HINCRBY', KEYS[1], $accepted, 1)") == "redis.call('HINCRBY', KEYS[1], 'accepted', 1)"
    with pytest.raises(ValueError, match="'acceptd', which is not one of: accepted, .*, waiting"):
        stats.lua("redis.call('HINCRBY', KEYS[1], $acceptd, 1)")


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_no_lua_script_spells_a_stats_field_by_hand():
    """Scripts take counter names from the enum (``$accepted``), never as a literal."""
    literal = re.compile(r"'HINCRBY',\s*[^,]+,\s*'(\w+)'")
    by_hand = {(name, field) for name, text in _sources().items() for field in literal.findall(text)}
    assert by_hand == set(), (
        f"Lua HINCRBY with a literal field (use $name from conversion_relay.store.stats): {by_hand}"
    )


def test_every_stats_field_a_script_increments_is_an_enum_member():
    """The scripts as Redis runs them (after the names were put in)."""
    built = [
        waiting.CLAIM_SCRIPT,
        waiting.CUT_SCRIPT,
        deadletter.REPLAY_SCRIPT,
        deadletter.CUT_SCRIPT,
        backlog.APPEND_SCRIPT,
        stream._TAKE_OVER,
    ]
    fields = {f for script in built for f in re.findall(r"'HINCRBY',\s*[^,]+,\s*'(\w+)'", script)}
    assert fields == {"accepted", "reclaimed", "waiting"}
    assert all(stats.is_field(f) for f in fields)


def test_only_the_stats_module_writes_the_stats_hash_from_python():
    """Python writes counters through conversion_relay.store.stats: no ``hincrby`` elsewhere (the
    breaker's own hash and the fenced writer's primitive aside)."""
    writers = {name for name, text in _sources().items() if re.search(r"\.hincrby\(", text)}
    assert writers == {"store/stats.py", "engine/breaker.py"}
    assert "breaker.record_failure(w, self.rt.keys.breaker(" in (PACKAGE / "engine/delivery.py").read_text()


def test_every_field_a_real_run_writes_to_the_stats_hash_is_known(make_stack, sandbox, gravity):
    """A small real run (producer, in-process drains, the sandbox, a replay) moves most
    counters; every field of every stats hash afterwards is a counter, the ``waiting`` gauge or
    ``skipped:<identifier>``."""
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    groups(stack, "gravity")
    gravity.configure(statuses=[413], event_error_prefix="bad-")
    stack.relay.enqueue([purchase("ok-1"), purchase("ok-2"), purchase("bad-1")])
    stack.relay.enqueue([{"event_name": "Search", "event_id": "s-1", "custom_data": {"search_string": "x"}}])
    drain_once(stack, "gravity")
    gravity.configure(statuses=[503])
    stack.relay.enqueue([purchase("later-1")])
    drain_once(stack, "gravity")
    (letter,) = stack.dead_letters("gravity")
    assert letter.reason is DeadLetterReason.VENDOR_REJECTED_EVENT
    assert stack.admin.replay(Selection(ids=(letter.id,)), dry_run=False)["done"] == 1

    fields: set[str] = set()
    for key in stack.redis.scan_iter(match=f"{stack.keys.prefix}:stats:*"):
        fields |= {f.decode() for f in stack.redis.hkeys(key)}
    assert {f for f in fields if not stats.is_field(f)} == set()
    moved = {"accepted", "delivered", "requests", "split", "skipped", "dead_lettered", "retried", "waiting"}
    assert moved | {"skipped:skip_events"} <= fields, sorted(fields)
    counters = stack.counters("gravity")
    assert set(counters) == {c.value for c in Counter}
    assert (counters["accepted"], counters["delivered"], counters["dead_lettered"]) == (5, 2, 1)
    assert stats.waiting_events(stack.redis, stack.keys, "gravity") == 2  # the retried event and the replay


def test_a_skip_reason_must_be_an_identifier(data):
    assert Skip("no_client_ip").reason == "no_client_ip"
    with pytest.raises(ValueError, match="skip reason: 'no client ip' is not a short identifier"):
        Skip("no client ip")
    pipe = data.pipeline()
    with pytest.raises(ValueError, match="skip reason: 'No-IP'"):
        stats.count_skip(pipe, KEYS, "gravity", "No-IP")
    stats.count_skip(pipe, KEYS, "gravity", "no_client_ip", 3)
    pipe.execute()
    assert stats.skips(data, KEYS, "gravity") == {"no_client_ip": 3}
    assert stats.read(data, KEYS, "gravity")["skipped"] == 3


# --- dead-letter reasons ----------------------------------------------------------------------


def test_an_unknown_dead_letter_reason_raises_and_lists_the_valid_ones():
    with pytest.raises(ValueError) as refused:
        dead_letter_reason("too_big")
    message = str(refused.value)
    assert "'too_big' is not a dead-letter reason" in message
    assert all(member.value in message for member in DeadLetterReason) and "http_<status>" in message
    for wrong in ("http_40", "http_4000", "http_099", "HTTP_400", "", "http_"):
        with pytest.raises(ValueError):
            dead_letter_reason(wrong)
    assert dead_letter_reason("too_large") is DeadLetterReason.TOO_LARGE
    assert dead_letter_reason("http_401") == http_reason(401) == "http_401"
    assert isinstance(http_reason(401), HttpReason) and http_reason(401).status == 401
    with pytest.raises(ValueError):
        http_reason(99)


def test_every_writer_and_filter_refuses_an_unknown_reason():
    with pytest.raises(ValueError, match="'refused' is not a dead-letter reason"):
        Rejected(reason="refused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'bogus' is not a dead-letter reason"):
        DeadLetter("gravity", "gravity_capi", "", [], "bogus", None, "", 1, 1.0, 1.0)
    with pytest.raises(InvalidSelection, match="reason: 'no_such_reason' is not a dead-letter reason; give one of"):
        Selection(reason="no_such_reason")
    assert Selection(reason="http_400").reason == "http_400"
    assert Rejected(reason="vendor_refused").reason is DeadLetterReason.VENDOR_REFUSED


def test_the_command_line_refuses_an_unknown_reason_before_asking_redis(make_stack):
    stack = make_stack()
    env = {**stack.env, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens: usage is checked first
    refused = run(env, "dlq", "list", "--reason", "http_4OO")
    assert refused.code == 2
    assert "Invalid value for '--reason': 'http_4OO' is not a dead-letter reason; give one of:" in refused.stderr
    assert "redelivered_too_often" in refused.stderr


def test_no_module_spells_a_dead_letter_reason_as_a_bare_string():
    """Reasons are written as enum members (or :func:`http_reason`) everywhere but where the
    enum is declared; docstrings may name them."""
    values = {member.value for member in DeadLetterReason}
    found = []
    for name, text in _sources().items():
        if name == "outcomes.py" or name.startswith("sandbox/"):
            continue
        tree = ast.parse(text)
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and id(node) not in docstrings and node.value in values:
                found.append((name, node.lineno, node.value))
            if isinstance(node, ast.JoinedStr) and node.values and ast.unparse(node).startswith(("f'http_", 'f"http_')):
                found.append((name, node.lineno, ast.unparse(node)))
    assert found == [], found


# --- records ----------------------------------------------------------------------------------


def _letter(**changes) -> DeadLetter:
    values = dict(
        destination="gravity",
        vendor="gravity_capi",
        group="g1",
        parts=['{"event_id": "a"}', '{"event_id": "b"}'],
        reason="http_422",
        status=422,
        excerpt="unknown product",
        attempts=3,
        first_failed_at=1000.5,
        last_failed_at=1002.25,
        errors={"1": "bad sku"},
        entry_field="",
        id="letter-1",
    )
    return DeadLetter(**{**values, **changes})


def _batch(**changes) -> WaitingBatch:
    values = dict(
        destination="gravity",
        group="g1",
        parts=['{"event_id": "a"}'],
        attempts=2,
        first_failure_at=1000.5,
        last_failure_at=1001.0,
        next_attempt_at=1010.0,
        last_status=503,
        last_reason="http_503",
        last_excerpt="busy",
        id="batch-1",
    )
    return WaitingBatch(**{**values, **changes})


def test_the_hash_formats_are_the_ones_the_relay_always_wrote():
    """Same field names and encodings as before the codec, so stored records stay readable."""
    assert _letter().to_redis() == {
        "destination": "gravity",
        "vendor": "gravity_capi",
        "group": "g1",
        "parts": '["{\\"event_id\\": \\"a\\"}", "{\\"event_id\\": \\"b\\"}"]',
        "reason": "http_422",
        "status": "422",
        "excerpt": "unknown product",
        "attempts": "3",
        "first_failed_at": "1000.5",
        "last_failed_at": "1002.25",
        "errors": '{"1": "bad sku"}',
        "entry_field": "",
        "id": "letter-1",
    }
    assert _batch(last_status=None).to_redis() == {
        "destination": "gravity",
        "group": "g1",
        "parts": '["{\\"event_id\\": \\"a\\"}"]',
        "attempts": "2",
        "first_failure_at": "1000.5",
        "last_failure_at": "1001.0",
        "next_attempt_at": "1010.0",
        "last_status": "",
        "last_reason": "http_503",
        "last_excerpt": "busy",
        "id": "batch-1",
    }


def test_records_round_trip_through_redis(data):
    letters, batches = DeadLetterStore(data, KEYS), WaitingBatches(data, KEYS)
    written = [_letter(), _letter(id="letter-2", reason="mapping_error", status=None, entry_field="c", errors={})]
    pipe = data.pipeline()
    for letter in written:
        letters.add(pipe, letter)
    batches.park(pipe, _batch())
    batches.park(pipe, _batch(id="batch-2", last_status=None, last_reason="", last_excerpt=""))
    pipe.execute()
    assert [letters.get(x.id) for x in written] == written
    assert letters.get("letter-2").reason is DeadLetterReason.MAPPING_ERROR
    assert sorted(batches.list("gravity"), key=lambda b: b.id) == [
        _batch(),
        _batch(id="batch-2", last_status=None, last_reason="", last_excerpt=""),
    ]
    for key in (KEYS.dlq_entry("letter-1"), KEYS.batch("gravity", "batch-1")):
        stored = {f.decode() for f in data.hkeys(key)}
        fmt = deadletter.FORMAT if "dlq" in key else waiting.FORMAT
        assert stored == set(fmt.names)


def test_a_record_written_before_later_fields_existed_still_reads():
    old_letter = {k.encode(): v.encode() for k, v in _letter().to_redis().items() if k not in ("errors", "entry_field")}
    assert DeadLetter.from_redis(old_letter) == _letter(errors={})
    old_batch = {
        k.encode(): v.encode()
        for k, v in _batch().to_redis().items()
        if k not in ("last_status", "last_reason", "last_excerpt")
    }
    assert WaitingBatch.from_redis({**old_batch, b"claimed_until": b"99.0"}) == _batch(
        last_status=None, last_reason="", last_excerpt=""
    )
    with pytest.raises(ValueError, match="no 'parts'.*not a whole DeadLetter"):
        DeadLetter.from_redis({k: v for k, v in old_letter.items() if k != b"parts"})
    with pytest.raises(ValueError, match="'retried_out' is not a dead-letter reason"):
        DeadLetter.from_redis({**old_letter, b"reason": b"retried_out"})


def _lua_arguments(call: str) -> list[str]:
    """The arguments of one Lua call, split at the commas between them (not those in strings)."""
    return [t.strip() for t in re.findall(r"(?:'[^']*'|[^,'])+", call)]


def test_the_replay_script_writes_exactly_the_fields_of_a_waiting_batch(data):
    (hset,) = re.findall(r"redis\.call\('HSET', (.*)\)", deadletter.REPLAY_SCRIPT)
    key, *pairs = _lua_arguments(hset)
    assert key == "KEYS[5]"
    assert [name.strip("'") for name in pairs[0::2]] == list(waiting.FORMAT.names)
    with pytest.raises(ValueError, match=r"missing fields \['last_excerpt'\], unknown \['excerpt'\]"):
        waiting.FORMAT.lua_hset("KEYS[1]", {**dict.fromkeys(waiting.FORMAT.names[:-2], "x"), "id": "x", "excerpt": "x"})
    with pytest.raises(ValueError, match="names field 'part'"):
        records.lua("redis.call('HGET', KEYS[1], $part)", waiting.FORMAT.names)
    with pytest.raises(KeyError, match="WaitingBatch has no field 'part'"):
        waiting.FORMAT.field("part")

    letters = DeadLetterStore(data, KEYS)
    pipe = data.pipeline()
    letters.add(pipe, _letter())
    pipe.execute()
    now = time.time()
    batch_id = letters.replay(_letter(), now)
    stored = data.hgetall(KEYS.batch("gravity", batch_id))
    assert {f.decode() for f in stored} == set(waiting.FORMAT.names)
    assert WaitingBatch.from_redis(stored) == WaitingBatch(
        destination="gravity",
        group="g1",
        parts=_letter().parts,
        attempts=0,
        first_failure_at=now,
        last_failure_at=now,
        next_attempt_at=now,
        last_status=None,
        last_reason="replayed",
        last_excerpt="replay of dead letter letter-1",
        id=batch_id,
    )
    assert stats.waiting_events(data, KEYS, "gravity") == 2
