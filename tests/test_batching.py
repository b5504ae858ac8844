"""Unit tests of conversion_relay.vendors.batching: Batcher limits, deadlines, groups, and Chunk.split."""

from __future__ import annotations

import json

import pytest

from conversion_relay.vendors.batching import Batcher, Chunk
from conversion_relay.vendors.destination import DestinationSettings
from conversion_relay.vendors.gravity_capi import GravityCapiAdapter

GROUP = ""
TEST_GROUP = "TEST4711"


def adapter(max_events: int = 1000, max_bytes: int = 1_000_000) -> GravityCapiAdapter:
    return GravityCapiAdapter(
        DestinationSettings(
            name="gravity",
            vendor="gravity_capi",
            base_url="https://api.example.test",
            api_key="k",
            api_key_env="K",
            connect_timeout_seconds=1.0,
            read_timeout_seconds=1.0,
            max_events=max_events,
            max_bytes=max_bytes,
        )
    )


def part(i: int, pad: int = 0) -> bytes:
    return json.dumps(
        {"event_name": "Purchase", "event_id": f"e-{i:04d}", "pad": "x" * pad}, separators=(",", ":")
    ).encode()


def batcher_for(a: GravityCapiAdapter, **kwargs) -> Batcher:
    return Batcher(
        max_events=kwargs.pop("max_events", a.destination.max_events),
        max_bytes=kwargs.pop("max_bytes", a.destination.max_bytes),
        envelope_size=a.envelope_size,
        **kwargs,
    )


# --- count limit ------------------------------------------------------------------------------


def test_count_limit_emits_full_chunk_exactly_at_max_events():
    b = batcher_for(adapter(), max_events=3)
    assert b.add(GROUP, part(1), "s:1", 10.0) == []
    assert b.add(GROUP, part(2), "s:2", 11.0) == []
    ready = b.add(GROUP, part(3), "s:3", 12.0)
    assert len(ready) == 1
    chunk = ready[0]
    assert chunk.parts == [part(1), part(2), part(3)]
    assert chunk.origins == ["s:1", "s:2", "s:3"]
    assert chunk.oldest_enqueued_at == 10.0
    assert b.held == 0
    assert b.drain() == []


def test_count_limit_next_part_starts_a_new_chunk():
    b = batcher_for(adapter(), max_events=2)
    emitted = []
    for i in range(5):
        emitted += b.add(GROUP, part(i), f"s:{i}", float(i))
    assert [c.origins for c in emitted] == [["s:0", "s:1"], ["s:2", "s:3"]]
    assert b.held == 1
    rest = b.drain()
    assert [c.origins for c in rest] == [["s:4"]]


# --- byte limit -------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [GROUP, TEST_GROUP])
def test_byte_limit_chunk_size_equals_real_body_length_and_stays_within_limit(group):
    a = adapter()
    max_bytes = 2000
    b = batcher_for(a, max_bytes=max_bytes)
    emitted: list[Chunk] = []
    bodies = [part(i, pad=120 + 7 * i) for i in range(40)]
    for i, body in enumerate(bodies):
        emitted += b.add(group, body, f"s:{i}", float(i))
    emitted += b.drain()

    assert len(emitted) > 3
    assert [p for c in emitted for p in c.parts] == bodies  # order kept, nothing lost
    for chunk in emitted:
        real = a.body_for(group, chunk.parts)
        assert chunk.size == len(real)
        assert chunk.size <= max_bytes
        json.loads(real)
    # Each full chunk left only because the next part would have broken the limit.
    for chunk, nxt in zip(emitted, emitted[1:]):
        assert len(a.body_for(group, chunk.parts + [nxt.parts[0]])) > max_bytes


def test_body_exactly_at_max_bytes_fits_in_one_chunk():
    a = adapter()
    bodies = [part(i, pad=100) for i in range(4)]
    exact = len(a.body_for(GROUP, bodies))
    b = batcher_for(a, max_bytes=exact)
    out = []
    for i, body in enumerate(bodies):
        out += b.add(GROUP, body, f"s:{i}", 0.0)
    assert out == []
    (chunk,) = b.drain()
    assert chunk.size == exact == len(a.body_for(GROUP, chunk.parts))
    assert len(chunk.parts) == 4


def test_one_byte_over_max_bytes_closes_the_chunk_before_the_part():
    a = adapter()
    bodies = [part(i, pad=100) for i in range(4)]
    b = batcher_for(a, max_bytes=len(a.body_for(GROUP, bodies)) - 1)
    out = []
    for i, body in enumerate(bodies):
        out += b.add(GROUP, body, f"s:{i}", 0.0)
    assert len(out) == 1
    assert out[0].parts == bodies[:3]
    assert [c.parts for c in b.drain()] == [bodies[3:]]


def test_fits_alone_counts_the_envelope_of_the_group():
    a = adapter()
    body = part(1, pad=50)
    envelope = a.envelope_size(TEST_GROUP)
    assert envelope > a.envelope_size(GROUP)
    assert batcher_for(a, max_bytes=envelope + len(body)).fits_alone(TEST_GROUP, body)
    assert not batcher_for(a, max_bytes=envelope + len(body) - 1).fits_alone(TEST_GROUP, body)
    assert batcher_for(a, max_bytes=envelope + len(body) - 1).fits_alone(GROUP, body)


def test_fits_alone_matches_real_body_length():
    a = adapter()
    body = part(1, pad=50)
    assert a.envelope_size(TEST_GROUP) + len(body) == len(a.body_for(TEST_GROUP, [body]))


# --- groups -----------------------------------------------------------------------------------


def test_groups_never_share_a_chunk():
    b = batcher_for(adapter(), max_events=2)
    out = []
    out += b.add("A", part(1), "s:1", 1.0)
    out += b.add("B", part(2), "s:2", 2.0)
    out += b.add("A", part(3), "s:3", 3.0)
    assert [(c.group, c.origins) for c in out] == [("A", ["s:1", "s:3"])]
    rest = b.drain()
    assert [(c.group, c.origins) for c in rest] == [("B", ["s:2"])]


def test_groups_have_own_envelopes_in_size():
    a = adapter()
    b = batcher_for(a)
    b.add(GROUP, part(1), "s:1", 0.0)
    b.add(TEST_GROUP, part(2), "s:2", 0.0)
    chunks = {c.group: c for c in b.drain()}
    assert chunks[GROUP].size == len(a.body_for(GROUP, [part(1)]))
    assert chunks[TEST_GROUP].size == len(a.body_for(TEST_GROUP, [part(2)]))


# --- deadlines and memory ---------------------------------------------------------------------


def test_expired_emits_only_chunks_whose_oldest_part_is_old_enough():
    b = batcher_for(adapter())
    b.add("A", part(1), "s:1", 100.0)
    b.add("A", part(2), "s:2", 104.0)
    b.add("B", part(3), "s:3", 103.0)
    assert b.oldest_enqueued_at == 100.0

    assert b.expired(now=100.9, deadline_seconds=1.0) == []
    due = b.expired(now=101.0, deadline_seconds=1.0)  # exactly at the deadline counts
    assert [(c.group, c.origins) for c in due] == [("A", ["s:1", "s:2"])]
    assert b.held == 1
    assert b.oldest_enqueued_at == 103.0
    assert b.expired(now=103.5, deadline_seconds=1.0) == []
    assert [c.group for c in b.expired(now=104.0, deadline_seconds=1.0)] == ["B"]
    assert b.oldest_enqueued_at is None


def test_oldest_enqueued_at_is_minimum_even_when_parts_arrive_out_of_order():
    b = batcher_for(adapter())
    b.add("A", part(1), "s:1", 50.0)
    b.add("A", part(2), "s:2", 40.0)
    (chunk,) = b.expired(now=41.0, deadline_seconds=1.0)
    assert chunk.oldest_enqueued_at == 40.0


def test_max_held_parts_forces_out_the_oldest_group():
    b = batcher_for(adapter(), max_events=100, max_held_parts=3)
    assert b.add("new", part(1), "s:1", 20.0) == []
    assert b.add("old", part(2), "s:2", 10.0) == []
    assert b.add("new", part(3), "s:3", 21.0) == []
    out = b.add("mid", part(4), "s:4", 15.0)
    assert [(c.group, c.origins) for c in out] == [("old", ["s:2"])]
    assert b.held == 3
    out = b.add("mid", part(5), "s:5", 16.0)
    assert [(c.group, c.origins) for c in out] == [("mid", ["s:4", "s:5"])]
    assert b.held == 2


def test_default_max_held_parts():
    assert Batcher(max_events=10, max_bytes=10_000, envelope_size=lambda g: 2).max_held_parts == 1000
    assert Batcher(max_events=900, max_bytes=10_000, envelope_size=lambda g: 2).max_held_parts == 1800


def test_drain_empties_the_batcher():
    b = batcher_for(adapter())
    for i, group in enumerate(["A", "B", "A", "C"]):
        b.add(group, part(i), f"s:{i}", float(i))
    chunks = b.drain()
    assert sorted((c.group, tuple(c.origins)) for c in chunks) == [
        ("A", ("s:0", "s:2")),
        ("B", ("s:1",)),
        ("C", ("s:3",)),
    ]
    assert b.held == 0
    assert b.oldest_enqueued_at is None
    assert b.drain() == []
    assert b.expired(now=1e12, deadline_seconds=0.0) == []


# --- Chunk.split ------------------------------------------------------------------------------


def test_split_halves_parts_and_origins_and_keeps_retry_history():
    chunk = Chunk(
        group=TEST_GROUP,
        parts=[part(i) for i in range(5)],
        origins=[f"b:{i}" for i in range(5)],
        attempts=3,
        first_failure_at=1234.5,
        oldest_enqueued_at=1000.0,
        size=999,
    )
    left, right = chunk.split()
    assert left.parts == [part(0), part(1)]
    assert right.parts == [part(2), part(3), part(4)]
    assert left.origins == ["b:0", "b:1"]
    assert right.origins == ["b:2", "b:3", "b:4"]
    for half in (left, right):
        assert half.group == TEST_GROUP
        assert half.attempts == 3
        assert half.first_failure_at == 1234.5
        assert half.oldest_enqueued_at == 1000.0
    # The original is untouched.
    assert len(chunk.parts) == 5 and len(chunk.origins) == 5


def test_split_of_even_chunk_gives_equal_halves():
    chunk = Chunk(group="", parts=[part(i) for i in range(4)], origins=["s:a", "s:b", "s:c", "s:d"])
    left, right = chunk.split()
    assert (left.origins, right.origins) == (["s:a", "s:b"], ["s:c", "s:d"])
    assert left.attempts == right.attempts == 0
    assert left.first_failure_at is None and right.first_failure_at is None
