"""Per-destination counters in Redis: what was accepted, delivered, retried, dead-lettered.

The ``<p>:stats:<d>`` hash is written and read only through this module: Python code with
:func:`count`, :func:`count_skip` and :func:`waiting`, Lua scripts with the field names
:func:`lua` puts into them.  A counter is a :class:`Counter`, never a bare string, so a
misspelt one fails where it is written instead of starting a counter no report shows.

The hash holds four kinds of fields: the :class:`Counter` members, the ``waiting`` gauge
(:data:`WAITING`, events in waiting batches: the backlog a cap counts besides the streams),
``skipped:<reason>`` per skip reason and ``dead_lettered:<reason>`` per dead-letter reason.

Beside it, ``<p>:observed:<d>`` holds what the metrics need and no report counts: the request
duration and batch size histograms (one field per bucket, not cumulative, with their sums in
millionths, as the fenced writer increments integers only) and
the time of the last request the vendor took (:func:`observe`, :func:`observed`).

Every count moves in the same atomic step as what it counts: ``accepted`` in the producer's
append script (:mod:`conversion_relay.store.backlog`), ``reclaimed`` in the take-over script
(:mod:`conversion_relay.store.stream`), ``waiting`` in the scripts that park, replay or erase
waiting batches, and the rest in the delivery engine's fenced transaction of the outcome
(:mod:`conversion_relay.engine.delivery`) -- so a crash never leaves a count without its data.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from conversion_relay.outcomes import skip_reason
from conversion_relay.store import records

if TYPE_CHECKING:
    import redis

    from conversion_relay.store.keys import Keys


class Counter(StrEnum):
    """Every counter, in the order reports show them; the value is the hash field."""

    #: Events the producer stored for the destination (the append script).
    ACCEPTED = "accepted"
    #: Parts the vendor took (``ok``).
    DELIVERED = "delivered"
    #: Parts the vendor already had.
    DUPLICATE = "duplicate"
    #: Parts the vendor checked in test mode.
    TEST_OK = "test_ok"
    #: Events not sent, for a reason (each also counted as ``skipped:<reason>``).
    SKIPPED = "skipped"
    #: Parts parked after a transient failure.
    RETRIED = "retried"
    #: Parts parked unsent (the drain's budget ran out, or the destination backs off).
    DEFERRED = "deferred"
    #: Parts dead-lettered.
    DEAD_LETTERED = "dead_lettered"
    #: Requests the vendor answered or that failed once sent.
    REQUESTS = "requests"
    #: Requests split in halves (too large, or refused whole).
    SPLIT = "split"
    #: Entries a drain took over from an earlier one (the take-over script).
    RECLAIMED = "reclaimed"

    @classmethod
    def _missing_(cls, value: object) -> Counter:
        raise ValueError(f"counter: {value!r} is not one the relay keeps; known: {', '.join(cls)}.")


#: Every counter, in the order reports show them.
COUNTERS = tuple(Counter)

#: The gauge of events held in waiting batches (moved up and down, not only up).
WAITING = "waiting"

#: The fields a Lua script may name (``$accepted``, ``$waiting``: see :func:`lua`).
FIELDS = (*(c.value for c in Counter), WAITING)

#: Prefix of the counters of skips by reason (``skipped:no_client_ip``) in the stats hash.
SKIP_PREFIX = f"{Counter.SKIPPED}:"


#: Prefix of the counters of dead-lettered events by reason (``dead_lettered:http_401``).
DEAD_PREFIX = f"{Counter.DEAD_LETTERED}:"

#: Upper bounds (seconds) of the request duration histogram; a last bucket takes the rest.
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Upper bounds (events) of the batch size histogram.
SIZE_BOUNDS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: The two histograms of ``<p>:observed:<d>``, by field prefix.
HISTOGRAMS = {"duration": DURATION_BOUNDS, "size": SIZE_BOUNDS}
#: Field of ``<p>:observed:<d>``: epoch seconds of the last request the vendor took.
LAST_SUCCESS = "last_success"


def _checked(counter: Counter) -> Counter:
    if not isinstance(counter, Counter):
        raise ValueError(
            f"counter: {counter!r} is not a Counter; give one of {', '.join(f'Counter.{c.name}' for c in Counter)}."
        )
    return counter


def count(pipe: redis.client.Pipeline, keys: Keys, destination: str, counter: Counter, amount: int = 1) -> None:
    """Add to a counter inside the caller's transaction, so counts move with the data.

    Raises:
        ValueError: ``counter`` is not a :class:`Counter` (a string, even a right one, is refused:
            only the enum is checked where it is written).
    """
    _checked(counter)
    if amount:
        pipe.hincrby(keys.stats(destination), counter.value, amount)


def count_each(pipe: redis.client.Pipeline, keys: Keys, destination: str, amounts: Mapping[Counter, int]) -> None:
    """:func:`count` for several counters at once (those at 0 are left alone)."""
    for counter, amount in amounts.items():
        count(pipe, keys, destination, counter, amount)


def count_skip(pipe: redis.client.Pipeline, keys: Keys, destination: str, reason: str, amount: int = 1) -> None:
    """Count skipped events, in total and by reason, inside the caller's transaction.

    Raises:
        ValueError: ``reason`` is not a short identifier (see :func:`conversion_relay.outcomes.skip_reason`).
    """
    field = SKIP_PREFIX + skip_reason(reason)
    if amount:
        key = keys.stats(destination)
        pipe.hincrby(key, Counter.SKIPPED.value, amount)
        pipe.hincrby(key, field, amount)


def count_dead(pipe: redis.client.Pipeline, keys: Keys, destination: str, reason: str, amount: int) -> None:
    """Count dead-lettered events, in total and by reason, inside the caller's transaction."""
    if amount:
        key = keys.stats(destination)
        pipe.hincrby(key, Counter.DEAD_LETTERED.value, amount)
        pipe.hincrby(key, DEAD_PREFIX + skip_reason(str(reason)), amount)


def _bucket(bounds: tuple[float, ...], value: float) -> str:
    for bound in bounds:
        if value <= bound:
            return f"{bound:g}"
    return "+Inf"


def observe(pipe: redis.client.Pipeline, keys: Keys, destination: str, seconds: float, events: int) -> None:
    """Put one request (its duration and how many events it carried) into the histograms,
    inside the transaction that records its outcome."""
    key = keys.observed(destination)
    pipe.hincrby(key, f"duration:{_bucket(DURATION_BOUNDS, seconds)}", 1)
    pipe.hincrby(key, "duration:sum_us", int(max(0.0, seconds) * 1e6))
    pipe.hincrby(key, f"size:{_bucket(SIZE_BOUNDS, events)}", 1)
    pipe.hincrby(key, "size:sum_us", events * 1_000_000)


def succeeded(pipe: redis.client.Pipeline, keys: Keys, destination: str, now: float) -> None:
    """Note that the vendor took a request at ``now`` (what a stalled destination lacks)."""
    pipe.hset(keys.observed(destination), {LAST_SUCCESS: repr(now)})


def observed(client: redis.Redis, keys: Keys, destination: str) -> dict[str, Any]:
    """The histograms as cumulative ``(bound, count)`` pairs with ``sum`` and ``count``, and
    ``last_success`` (epoch s, or None)."""
    raw = {k.decode(): v.decode() for k, v in client.hgetall(keys.observed(destination)).items()}
    report: dict[str, Any] = {LAST_SUCCESS: float(raw[LAST_SUCCESS]) if LAST_SUCCESS in raw else None}
    for name, bounds in HISTOGRAMS.items():
        total = 0
        buckets = []
        for label in (*(f"{b:g}" for b in bounds), "+Inf"):
            total += int(raw.get(f"{name}:{label}", 0))
            buckets.append((label, total))
        report[name] = {"buckets": buckets, "count": total, "sum": int(raw.get(f"{name}:sum_us", 0)) / 1e6}
    return report


def waiting(pipe: redis.client.Pipeline, keys: Keys, destination: str, amount: int) -> None:
    """Move the count of events held in waiting batches (part of the backlog a cap counts)."""
    if amount:
        pipe.hincrby(keys.stats(destination), WAITING, amount)


def lua(script: str) -> str:
    """A Lua script with ``$accepted``, ``$reclaimed``, ``$waiting`` ... replaced by the quoted
    field name, so scripts spell counters from :class:`Counter` too (at import: a misspelt
    ``$name`` fails there).  Scripts that also name record fields use :func:`records.lua`
    with :data:`FIELDS`."""
    return records.lua(script, FIELDS)


def is_field(name: str) -> bool:
    """Whether ``name`` is a field this module writes: a counter, the gauge, or a skip reason."""
    if name == WAITING or name in COUNTERS:
        return True
    prefix = next((p for p in (SKIP_PREFIX, DEAD_PREFIX) if name.startswith(p)), None)
    if prefix:
        try:
            skip_reason(name[len(prefix) :])
        except ValueError:
            return False
        return True
    return False


def skips(client: redis.Redis, keys: Keys, destination: str) -> dict[str, int]:
    """Skipped events by reason, most first."""
    raw = client.hgetall(keys.stats(destination))
    found = {k.decode()[len(SKIP_PREFIX) :]: int(v) for k, v in raw.items() if k.decode().startswith(SKIP_PREFIX)}
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


def dead_by_reason(client: redis.Redis, keys: Keys, destination: str) -> dict[str, int]:
    """Events dead-lettered by reason since the counters began (replayed or purged ones too)."""
    raw = client.hgetall(keys.stats(destination))
    return {k.decode()[len(DEAD_PREFIX) :]: int(v) for k, v in raw.items() if k.decode().startswith(DEAD_PREFIX)}


def waiting_events(client: redis.Redis, keys: Keys, destination: str) -> int:
    return max(0, int(client.hget(keys.stats(destination), WAITING) or 0))


def read(client: redis.Redis, keys: Keys, destination: str) -> dict[str, int]:
    """Every counter of the destination by name (as ``status`` reports them), 0 if never counted."""
    raw = client.hgetall(keys.stats(destination))
    values = {k.decode(): int(v) for k, v in raw.items()}
    return {str(counter): values.get(counter, 0) for counter in Counter}


def value(client: redis.Redis, keys: Keys, destination: str, counter: Counter) -> int:
    """One counter of the destination."""
    return int(client.hget(keys.stats(destination), _checked(counter).value) or 0)
