"""The producer: the one call a web app makes.

``Relay.enqueue`` validates and hashes in the calling process, then stores the events with one
Redis command (a script appending each event to its partition of every target destination).  It
never talks to Celery or to a vendor, so it costs a schema load and a Redis round trip, and for
each destination either every event of the call is stored or none is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis
from marshmallow import ValidationError

from schemas.canonical import canonical_many_schema, canonical_schema
from worker.errors import BacklogFullError, EnqueueError, EventValidationError
from worker.keys import Keys
from worker.partitions import event_hash, payload_hash
from worker.runtime import connect
from worker.settings import Settings, load_settings
from worker.vendors import VendorAdapter, adapter_for

# One command, so one round trip, and all-or-nothing per destination.
# KEYS: the memory reading, then per destination its stats key, its call key and its partition
# streams.
# ARGV: entry field (c or n), destination count, dedup ms (0: none), memory high-water share,
#       memory reading ms, (partitions, cap) per destination, then (partition hash, payload)
#       per event.
# Redis's own memory is read first: the call is refused whole if storing it would pass the
# high-water mark, so outcomes, leases and broker messages always have room.  INFO costs some
# 20 us, so its reading is kept for MEMORY_READING_MS and shared by every producer.
# A destination whose call key exists already holds this call and is left alone: a retry of a
# call that timed out, or that a full destination refused, stores only where it is missing.
# The backlog a cap counts is the streams plus the events in waiting batches.
# Returns {-1, used, maxmemory} above the high-water mark, else {destinations stored now,
# destinations that held the call already, then (index, backlog) of each refused destination}.
_APPEND = """
local ndest = tonumber(ARGV[2])
local first = 6 + 2 * ndest
local nevents = (#ARGV - first + 1) / 2
local used, limit
local reading = redis.call('GET', KEYS[1])
if reading then
  used, limit = string.match(reading, '(%d+) (%d+)')
  used, limit = tonumber(used), tonumber(limit)
else
  local info = redis.call('INFO', 'memory')
  used = tonumber(string.match(info, 'used_memory:(%d+)'))
  limit = tonumber(string.match(info, 'maxmemory:(%d+)')) or 0
end
if limit > 0 then
  local size = 0
  for i = first + 1, #ARGV, 2 do size = size + #ARGV[i] end
  if used + size * ndest * 2 > limit * tonumber(ARGV[4]) then return {-1, used, limit} end
end
if not reading then
  redis.call('SET', KEYS[1], string.format('%d %d', used, limit), 'PX', ARGV[5])
end
local dedup_ms = tonumber(ARGV[3])
local open, refused = {}, {}
local held = 0
local key = 2
for d = 1, ndest do
  local parts, cap = tonumber(ARGV[4 + 2 * d]), tonumber(ARGV[5 + 2 * d])
  local backlog = 0
  if cap > 0 then
    backlog = math.max(0, tonumber(redis.call('HGET', KEYS[key], 'waiting') or '0'))
    for k = 1, parts do backlog = backlog + redis.call('XLEN', KEYS[key + 1 + k]) end
  end
  if cap > 0 and backlog + nevents > cap then
    refused[#refused + 1] = {d, backlog}
  elseif dedup_ms > 0 and not redis.call('SET', KEYS[key + 1], '1', 'NX', 'PX', dedup_ms) then
    held = held + 1
  else
    open[#open + 1] = {key, parts}
  end
  key = key + 2 + parts
end
for _, dest in ipairs(open) do
  local stats, parts = dest[1], dest[2]
  for i = first, #ARGV, 2 do
    redis.call('XADD', KEYS[stats + 2 + tonumber(ARGV[i]) % parts], '*', ARGV[1], ARGV[i + 1])
  end
  redis.call('HINCRBY', KEYS[stats], 'accepted', nevents)
end
local out = {#open, held}
for _, r in ipairs(refused) do out[#out + 1] = r[1]; out[#out + 1] = r[2] end
return out
"""


#: How long one reading of Redis's memory serves every producer (at 100 MB/s of events, 2 MB).
MEMORY_READING_MS = 20


class Relay:
    """Validates, hashes and enqueues conversion events.

    Create one per process and reuse it: it holds a Redis connection pool.

    >>> relay = Relay()                                    # settings from the environment
    >>> relay.enqueue({"event_name": "Purchase", "event_id": "order-123",
    ...                "user_data": {"em": ["customer@example.com"]},
    ...                "custom_data": {"value": 99.99, "currency": "EUR"}})
    ['order-123']
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.keys = Keys(self.settings.key_prefix)
        self.redis = connect(self.settings.redis_url, socket_timeout=self.settings.enqueue_timeout_seconds)
        region = self.settings.default_phone_region
        self._one = canonical_schema(region)
        self._many = canonical_many_schema(region)
        self._all = tuple(d.name for d in self.settings.enabled_destinations)
        self._append = self.redis.register_script(_APPEND)
        self._adapters: dict[str, VendorAdapter] = {}

    def enqueue(
        self,
        events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        destinations: Sequence[str] | None = None,
    ) -> list[str]:
        """Validate, hash and store one event or a list of events for delivery.

        Args:
            events: one canonical event (a dict) or a list of them.
            destinations: names of configured destinations; all enabled ones when omitted.

        Returns:
            The ``event_id`` of each event, in order (generated where the event had none).

        Raises:
            EventValidationError: naming every bad field (by index for a list); nothing of the
                call was enqueued.
            BacklogFullError: a destination is full; nothing was stored for it (``full``), the
                others of the call did store the events (``stored_in``).  The same call again
                stores only where it is missing.
            EnqueueError: Redis could not take the events.  If ``maybe_stored`` is true (a
                timeout), retry with the same ``event_id``s (``exc.event_ids``): the same call
                is recognised and stored once.
        """
        many = not isinstance(events, Mapping)
        if many and (isinstance(events, (str, bytes)) or not isinstance(events, Sequence)):
            raise EventValidationError({"_schema": ["Expected an event (a dict) or a list of events."]})
        if many and not events:
            return []
        try:
            loaded = self._many.load(events) if many else [self._one.load(events)]
        except ValidationError as exc:
            raise EventValidationError(exc.messages, many=many) from None
        targets = self._targets(destinations)
        ids = [event["event_id"] for event in loaded]
        encoded = self._encode(loaded, many)
        partitioned = self._fits(targets, len(encoded))
        hashes = [event_hash(e) for e in loaded] if partitioned else None
        digest = self._digest(f"\1{e['event_id']}\0{e['event_name']}".encode() for e in loaded)
        self._store(targets, b"c", encoded, hashes, digest, ids)
        return ids

    def enqueue_native(self, destination: str, payload: Any, *, operation: str | None = None) -> int:
        """Validate and store a vendor-native payload for one destination.

        The payload is what the vendor documents: a whole request body (``{"events": [...]}``
        for Tracify, ``{user, session, context, events}`` for Gravity Field, a list of items for
        Gravity RECO) or one item of it.  ``operation`` names the vendor call where a vendor
        has several (RECO: ``addEvents``, ``addItems``, ``addUsers``, ``hideItems``).

        Returns:
            The number of items stored.

        Raises:
            EventValidationError: the payload does not match the vendor's schema; nothing stored.
            BacklogFullError, EnqueueError: as for :meth:`enqueue`.
        """
        adapter = self._adapter(destination)
        try:
            items = adapter.load_native(payload, operation, phone_region=self.settings.default_phone_region)
        except ValidationError as exc:
            raise EventValidationError(exc.messages) from None
        encoded = [orjson.dumps({"o": operation, "p": item}) for item in items]
        if encoded:
            targets = (destination,)
            partitioned = self._fits(targets, len(encoded))
            hashes = [payload_hash(e) for e in encoded] if partitioned else None
            self._store(targets, b"n", encoded, hashes, self._digest(encoded), ())
        return len(encoded)

    def _adapter(self, destination: str) -> VendorAdapter:
        found = self._adapters.get(destination)
        if found is None:
            found = self._adapters[destination] = adapter_for(self.settings.destination(destination))
        return found

    def _fits(self, targets: tuple[str, ...], count: int) -> bool:
        """Refuse a call larger than a target's whole backlog cap (it could never be stored);
        return whether any target has several partitions (the events then need a hash)."""
        for name in targets:
            cap = self.settings.destination(name).max_backlog_events
            if 0 < cap < count:
                raise EventValidationError(
                    {
                        "_schema": [
                            f"{count} events in one call is more than destination {name!r} may hold "
                            f"(max_backlog_events {cap}); send them in smaller calls."
                        ]
                    }
                )
        return any(self.settings.destination(n).parallel_drains > 1 for n in targets)

    def _digest(self, pieces: Any) -> str | None:
        """What identifies a call: each event's id and name (a retry after a timeout generates
        new times, but carries the same ids), or a native payload's bytes."""
        if self.settings.enqueue_dedup_seconds <= 0:
            return None
        digest = hashlib.blake2b(digest_size=16)
        for piece in pieces:
            digest.update(piece)
        return digest.hexdigest()

    def _keys(self, targets: tuple[str, ...], digest: str | None) -> tuple[list[str], list[Any]]:
        keys: list[str] = [self.keys.memory]
        args: list[Any] = []
        for name in targets:
            dest = self.settings.destination(name)
            call = self.keys.call(f"{digest}:{name}") if digest else self.keys.stats(name)
            keys += [self.keys.stats(name), call, *self.keys.streams(name, dest.parallel_drains)]
            args += [dest.parallel_drains, dest.max_backlog_events]
        return keys, args

    def _store(
        self,
        targets: tuple[str, ...],
        field: bytes,
        encoded: list[bytes],
        hashes: list[int] | None,
        digest: str | None,
        ids: Sequence[str],
    ) -> None:
        dedup_ms = int(self.settings.enqueue_dedup_seconds * 1000) if digest else 0
        keys, dest_args = self._keys(targets, digest)
        per_event: list[Any] = []
        for index, body in enumerate(encoded):
            per_event += (hashes[index] if hashes else 0, body)
        args = [field, len(targets), dedup_ms, self.settings.memory_high_water, MEMORY_READING_MS]
        args += [*dest_args, *per_event]
        try:
            try:
                # EVALSHA directly: redis-py's Script wrapper costs a fifth of the round trip.
                reply = self.redis.execute_command("EVALSHA", self._append.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                reply = self._append(keys=keys, args=args)  # loads the script, then runs it
        except redis.RedisError as exc:
            raise self._error(exc, ids) from None
        stored = int(reply[0])
        if stored == -1:
            used, limit = int(reply[1]), int(reply[2])
            state = "out of memory, at" if used >= limit else "at"
            raise BacklogFullError(
                f"Redis is {state} {used / limit:.0%} of maxmemory, and these events would pass the "
                f"relay's high-water mark (relay.memory_high_water {self.settings.memory_high_water:.0%}); "
                "nothing was enqueued. Delivery frees memory and enqueue resumes by itself: retry "
                "later, or give Redis more memory.",
                full={name: -1 for name in targets},
                stored_in=(),
                event_ids=ids,
            )
        if len(reply) > 2:
            full = {targets[int(reply[i]) - 1]: int(reply[i + 1]) for i in range(2, len(reply), 2)}
            stored_in = tuple(name for name in targets if name not in full)
            limits = ", ".join(
                f"{name} ({backlog} events waiting, max_backlog_events "
                f"{self.settings.destination(name).max_backlog_events})"
                for name, backlog in full.items()
            )
            where = f"; stored for {', '.join(stored_in)}" if stored_in else "; nothing was enqueued"
            raise BacklogFullError(
                f"Destination full: {limits}{where}. Retry later for the full destinations "
                "(destinations=list(exc.full)) with the same event_ids (exc.event_ids).",
                full=full,
                stored_in=stored_in,
                event_ids=ids,
            )

    def _error(self, exc: redis.RedisError, ids: Sequence[str]) -> EnqueueError:
        where = self.redis.connection_pool.connection_kwargs
        server = f"Redis at {where.get('host')}:{where.get('port')}"
        kind = type(exc).__name__
        if isinstance(exc, redis.ResponseError):
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or "maxmemory" in str(exc):
                return EnqueueError(
                    f"{server} is out of memory (maxmemory reached); nothing was enqueued. "
                    "Give Redis more memory or lower max_backlog_events.",
                    event_ids=ids,
                )
            return EnqueueError(f"{server} refused the events ({kind}); nothing was enqueued.", event_ids=ids)
        # redis-py says "Error ... connecting to" when no connection could be made at all: the
        # command never left.  Any other failure may have come after Redis ran the script.
        if isinstance(exc, redis.ConnectionError) and "connecting to" in str(exc):
            return EnqueueError(
                f"{server} could not be reached ({kind}); nothing was enqueued. Check REDIS_URL and retry.",
                event_ids=ids,
            )
        return EnqueueError(
            f"{server} did not answer ({kind}); the events may have been stored. Retry with the same "
            "event_ids (exc.event_ids), or the same native payload: within enqueue_dedup_seconds the "
            "same call is recognised and stored once.",
            event_ids=ids,
            maybe_stored=True,
        )

    @staticmethod
    def _encode(events: list[dict[str, Any]], many: bool) -> list[bytes]:
        encoded = []
        for index, event in enumerate(events):
            try:
                encoded.append(orjson.dumps(event))
            except (TypeError, orjson.JSONEncodeError) as exc:
                where = {index: {"client_context": [f"Not JSON-encodable ({exc})."]}}
                raise EventValidationError(where if many else where[index], many=many) from None
        return encoded

    def _targets(self, destinations: Sequence[str] | None) -> tuple[str, ...]:
        if destinations is None:
            return self._all
        if isinstance(destinations, str):
            destinations = [destinations]
        for name in destinations:
            self.settings.destination(name)
        return tuple(destinations)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
