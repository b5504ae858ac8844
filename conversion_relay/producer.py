"""The producer: the one call a web app makes.

``Relay.enqueue`` validates and hashes in the calling process, then stores the events with one
Redis command (a script doing one ``XADD`` per event and destination).  It never talks to Celery or to a
vendor, so it costs a schema load and a Redis round trip, and either every event of the call is
stored or none is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis
from marshmallow import ValidationError

from schemas.canonical import canonical_many_schema, canonical_schema
from worker.errors import EnqueueError, EventValidationError
from worker.keys import Keys
from worker.runtime import connect
from worker.settings import Settings, load_settings
from worker.vendors import VendorAdapter, adapter_for

# One command, so one round trip and all-or-nothing: every event to every destination's stream,
# and the accepted counters.  KEYS: stream and stats key of each destination; ARGV: the events.
# ARGV[1] is the entry field: c (canonical event) or n (vendor-native item).
_APPEND = """
for d = 1, #KEYS, 2 do
  for i = 2, #ARGV do
    redis.call('XADD', KEYS[d], '*', ARGV[1], ARGV[i])
  end
  redis.call('HINCRBY', KEYS[d + 1], 'accepted', #ARGV - 1)
end
return #ARGV - 1
"""


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
        self.redis = connect(self.settings.redis_url)
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
            EnqueueError: Redis could not be reached; nothing of the call was enqueued.
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
        self._store(targets, b"c", self._encode(loaded, many))
        return [event["event_id"] for event in loaded]

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
        """
        adapter = self._adapter(destination)
        try:
            items = adapter.load_native(payload, operation, phone_region=self.settings.default_phone_region)
        except ValidationError as exc:
            raise EventValidationError(exc.messages) from None
        encoded = [orjson.dumps({"o": operation, "p": item}) for item in items]
        if encoded:
            self._store((destination,), b"n", encoded)
        return len(encoded)

    def _adapter(self, destination: str) -> VendorAdapter:
        found = self._adapters.get(destination)
        if found is None:
            found = self._adapters[destination] = adapter_for(self.settings.destination(destination))
        return found

    def _store(self, targets: Sequence[str], field: bytes, encoded: list[bytes]) -> None:
        keys = [key for name in targets for key in (self.keys.stream(name), self.keys.stats(name))]
        try:
            try:
                # EVALSHA directly: redis-py's Script wrapper costs a fifth of the round trip.
                self.redis.execute_command("EVALSHA", self._append.sha, len(keys), *keys, field, *encoded)
            except redis.exceptions.NoScriptError:
                self._append(keys=keys, args=[field, *encoded])  # loads the script, then runs it
        except redis.RedisError as exc:
            where = self.redis.connection_pool.connection_kwargs
            raise EnqueueError(
                f"Redis at {where.get('host')}:{where.get('port')} did not take the events "
                f"({type(exc).__name__}); nothing was enqueued. Check REDIS_URL and retry."
            ) from None

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
