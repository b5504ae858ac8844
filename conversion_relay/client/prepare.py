"""What every producer shares: the checks before Redis, the call they store, and how a reply or a
Redis failure reads.

The sync :class:`~conversion_relay.client.producer.Relay`, the asyncio
:class:`~conversion_relay.client.aio.AsyncRelay` and the test double of :mod:`conversion_relay.testing`
are this class plus one way of running the append script.  Keeping the checks here, once, is
what makes an event that one of them accepts acceptable to all of them, with the same errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from marshmallow import ValidationError

from conversion_relay.client.explain import Explanation, explain_events
from conversion_relay.client.limits import (
    MAX_CALL_BYTES,
    MAX_CALL_ENTRIES,
    check_backlog_caps,
    check_bytes,
    check_count,
    check_event_sizes,
    encode_events,
    resolve_targets,
)
from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.errors import BacklogFullError, EnqueueError, EventValidationError, RelayError
from conversion_relay.schemas import untrusted
from conversion_relay.schemas.canonical import canonical_many_schema, canonical_schema
from conversion_relay.schemas.untrusted import shown
from conversion_relay.store import backlog
from conversion_relay.store.keys import Keys
from conversion_relay.store.partitions import event_hash, payload_hash
from conversion_relay.vendors import VendorAdapter, adapter_for


@dataclass(frozen=True)
class Call:
    """One checked call, ready to store: it holds the events as stored (hashed), never the
    caller's plaintext, so it may wait (for a database commit, say) without holding personal data.

    Attributes:
        targets: the destinations it stores for.
        kind: :data:`~conversion_relay.store.backlog.CANONICAL` or ``NATIVE``.
        bodies: each event's (or native item's) stored bytes.
        hashes: each one's partition hash, or None when no target has several partitions.
        digest: what identifies the call for dedup (None when ``enqueue_dedup_seconds`` is 0).
        ids: the ``event_id`` of each canonical event, in order (empty for a native call).
        plan: the targets as the append script takes them.
    """

    targets: tuple[str, ...]
    kind: bytes
    bodies: list[bytes]
    hashes: list[int] | None
    digest: str | None
    ids: tuple[str, ...]
    plan: tuple[backlog.Target, ...]


class Producer:
    """Validates, hashes and checks calls; a subclass stores them.

    ``max_call_entries`` and ``max_call_bytes`` bound what one call writes (events x
    destinations, and their bytes): Redis serves nothing else while a call is stored.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_call_entries: int = MAX_CALL_ENTRIES,
        max_call_bytes: int = MAX_CALL_BYTES,
    ) -> None:
        self.settings = settings or load_settings()
        self.max_call_entries = max_call_entries
        self.max_call_bytes = max_call_bytes
        self.keys = Keys(self.settings.key_prefix)
        region = self.settings.default_phone_region
        self._one = canonical_schema(region)
        self._many = canonical_many_schema(region)
        self._adapters: dict[str, VendorAdapter] = {}

    def prepare(
        self,
        events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        destinations: Sequence[str] | None = None,
    ) -> Call:
        """Every check of ``enqueue``, now, and the call that would store the events.

        For storing later (``conversion_relay.contrib.django.enqueue_on_commit`` stores once the
        database transaction commits): the errors are ``enqueue``'s validation errors, raised
        here, at the call site.  ``Relay.store(call)`` stores it.
        """
        try:
            return self._prepare(events, destinations)
        except RelayError as exc:
            error = exc
        del events  # see without_plaintext
        raise without_plaintext(error)

    def explain(
        self,
        events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        destinations: Sequence[str] | None = None,
    ) -> Explanation:
        """What ``enqueue`` would do with these events, without storing or sending anything.

        Validates exactly as ``enqueue`` does (the same ``EventValidationError``), then says for
        each event and destination the requests a drain would send for it alone (method, URL
        path, body; never the API key) or why it would be skipped.  Without ``destinations``
        every configured destination is shown, a disabled one as skipped (``disabled``).
        """
        try:
            targets, loaded, _, _ = self._checked(events, destinations)
        except RelayError as exc:
            error = exc
        else:
            return explain_events(self.settings, self._adapter, loaded, targets, destinations is None)
        del events  # see without_plaintext
        raise without_plaintext(error)

    def _checked(self, events: Any, destinations: Any) -> tuple[tuple[str, ...], list[Any], list[bytes], bool]:
        """Every check of ``enqueue`` before Redis: the targets, the loaded events, their bytes,
        and whether a target has several partitions (the events then need a hash)."""
        targets = resolve_targets(self.settings, destinations)
        many = not isinstance(events, Mapping)
        if many and (isinstance(events, (str, bytes)) or not isinstance(events, Sequence)):
            raise EventValidationError({"_schema": ["Expected an event (a dict) or a list of events."]})
        if many and not events:
            return targets, [], [], False
        check_count(len(events) if many else 1, targets, self.max_call_entries)
        try:
            loaded = self._many.load(events) if many else [self._one.load(events)]
        except ValidationError as exc:
            raise EventValidationError(shown(exc.messages), many=many) from None
        encoded = encode_events(loaded, many)
        check_bytes(encoded, targets, self.max_call_bytes)
        check_event_sizes(self.settings, self._adapter, targets, encoded, many)
        partitioned = check_backlog_caps(self.settings, targets, len(encoded))
        return targets, loaded, encoded, partitioned

    def _prepare(self, events: Any, destinations: Any) -> Call:
        targets, loaded, encoded, partitioned = self._checked(events, destinations)
        ids = tuple(event["event_id"] for event in loaded)
        hashes = [event_hash(e) for e in loaded] if partitioned else None
        digest = self._digest(f"\1{e['event_id']}\0{e['event_name']}".encode() for e in loaded) if loaded else None
        return self._call(targets, backlog.CANONICAL, encoded, hashes, digest, ids)

    def _prepare_native(self, destination: Any, payload: Any, operation: str | None) -> Call:
        if not isinstance(destination, str):
            raise EventValidationError({"destination": ["Not a destination name; name one, e.g. 'reco'."]})
        targets = resolve_targets(self.settings, [destination], field="destination")
        adapter = self._adapter(targets[0])
        findings = untrusted.check_json(payload)
        if findings.problems:
            raise EventValidationError(findings.messages())
        try:
            items = adapter.load_native(payload, operation, phone_region=self.settings.default_phone_region)
        except ValidationError as exc:
            raise EventValidationError(shown(exc.messages)) from None
        encoded = [backlog.native_body(operation, item) for item in items]
        check_count(len(encoded), targets, self.max_call_entries)
        check_bytes(encoded, targets, self.max_call_bytes)
        if not encoded:
            return self._call(targets, backlog.NATIVE, [], None, None, ())
        partitioned = check_backlog_caps(self.settings, targets, len(encoded))
        hashes = [payload_hash(e) for e in encoded] if partitioned else None
        return self._call(targets, backlog.NATIVE, encoded, hashes, self._digest(encoded), ())

    def _call(
        self,
        targets: tuple[str, ...],
        kind: bytes,
        bodies: list[bytes],
        hashes: list[int] | None,
        digest: str | None,
        ids: tuple[str, ...],
    ) -> Call:
        destinations = [self.settings.destination(name) for name in targets]
        plan = tuple(backlog.Target(d.name, d.parallel_drains, d.max_backlog_events) for d in destinations)
        return Call(targets, kind, bodies, hashes, digest, ids, plan)

    def _adapter(self, destination: str) -> VendorAdapter:
        found = self._adapters.get(destination)
        if found is None:
            found = self._adapters[destination] = adapter_for(self.settings.destination(destination))
        return found

    def _digest(self, pieces: Any) -> str | None:
        """What identifies a call: each event's id and name (a retry after a timeout generates
        new times, but carries the same ids), or a native payload's bytes."""
        if self.settings.enqueue_dedup_seconds <= 0:
            return None
        digest = hashlib.blake2b(digest_size=16)
        for piece in pieces:
            digest.update(piece)
        return digest.hexdigest()

    def _command(self, call: Call) -> tuple[list[str], list[Any]]:
        """The append script's keys and arguments for ``call``."""
        return backlog.append_command(
            self.keys,
            call.plan,
            call.kind,
            call.bodies,
            call.hashes,
            digest=call.digest,
            dedup_ms=int(self.settings.enqueue_dedup_seconds * 1000),
            high_water=self.settings.memory_high_water,
        )

    def _settle(self, call: Call, result: backlog.AppendResult) -> None:
        """Raise what the append script refused of ``call``, if anything."""
        refused = refusal(self.settings, result, call.targets, call.ids)
        if refused is not None:
            raise refused


class SyncProducer(Producer):
    """The blocking producer calls, for :class:`~conversion_relay.client.producer.Relay` and the
    test double alike: each checks, then hands the call to ``_store``."""

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
            EventValidationError: naming every bad field (by index for a list), a bad
                ``destinations`` (empty, a name twice, a disabled or unknown destination), an
                event too large for a request of one of its destinations, or a call over
                ``max_call_entries`` or ``max_call_bytes``; nothing of the call was enqueued.
                Its message never repeats a value of the events.
            BacklogFullError: a destination is full; nothing was stored for it (``full``), the
                others of the call did store the events (``stored_in``).  The same call again
                stores only where it is missing.
            EnqueueError: Redis could not take the events.  If ``maybe_stored`` is true (a
                timeout), retry with the same ``event_id``s (``exc.event_ids``): the same call
                is recognised and stored once.
        """
        try:
            call = self._prepare(events, destinations)
            self._store(call)
            return list(call.ids)
        except RelayError as exc:
            error = exc
        del events  # see without_plaintext
        raise without_plaintext(error)

    def enqueue_native(self, destination: str, payload: Any, *, operation: str | None = None) -> int:
        """Validate and store a vendor-native payload for one destination.

        The payload is what the vendor documents: a whole request body (``{"events": [...]}``
        for Tracify, ``{user, session, context, events}`` for Gravity Field, a list of items for
        Gravity RECO) or one item of it.  ``operation`` names the vendor call where a vendor
        has several (RECO: ``addEvents``, ``addItems``, ``addUsers``, ``hideItems``).

        Returns:
            The number of items stored.

        Raises:
            EventValidationError: the payload does not match the vendor's schema, the destination
                is disabled or unknown, or the payload is over the call limits; nothing stored.
            BacklogFullError, EnqueueError: as for :meth:`enqueue`.
        """
        try:
            call = self._prepare_native(destination, payload, operation)
            self._store(call)
            return len(call.bodies)
        except RelayError as exc:
            error = exc
        del payload  # see without_plaintext
        raise without_plaintext(error)

    def store(self, call: Call) -> list[str]:
        """Store a call :meth:`prepare` checked earlier; returns its event ids.

        Raises:
            BacklogFullError, EnqueueError: as for :meth:`enqueue`.
        """
        try:
            self._store(call)
        except RelayError as exc:
            error = exc
        else:
            return list(call.ids)
        raise without_plaintext(error)

    def _store(self, call: Call) -> None:
        raise NotImplementedError


def refusal(
    settings: Settings, result: backlog.AppendResult, targets: Sequence[str], ids: Sequence[str]
) -> BacklogFullError | None:
    """The error for a call the append script refused in part or whole, naming what to do."""
    if result.memory is not None:
        used, limit = result.memory
        state = "out of memory, at" if used >= limit else "at"
        return BacklogFullError(
            f"Redis is {state} {used / limit:.0%} of maxmemory, and these events would pass the "
            f"relay's high-water mark (relay.memory_high_water {settings.memory_high_water:.0%}); "
            "nothing was enqueued. Delivery frees memory and enqueue resumes by itself: retry "
            "later, or give Redis more memory.",
            full={name: -1 for name in targets},
            stored_in=(),
            event_ids=ids,
        )
    if not result.full:
        return None
    stored_in = tuple(name for name in targets if name not in result.full)
    limits = ", ".join(
        f"{name} ({waiting} events waiting, max_backlog_events {settings.destination(name).max_backlog_events})"
        for name, waiting in result.full.items()
    )
    where = f"; stored for {', '.join(stored_in)}" if stored_in else "; nothing was enqueued"
    return BacklogFullError(
        f"Destination full: {limits}{where}. Retry later for the full destinations "
        "(destinations=list(exc.full)) with the same event_ids (exc.event_ids).",
        full=result.full,
        stored_in=stored_in,
        event_ids=ids,
    )


def enqueue_error(exc: redis.RedisError, where: Mapping[str, Any], ids: Sequence[str]) -> EnqueueError:
    """The error for a Redis failure while storing a call (sync and asyncio clients alike):
    whether the events may have been stored, and what to do.  ``where``: the client's
    connection keywords (host and port name the server; the password never appears)."""
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


def without_plaintext(error: RelayError) -> RelayError:
    """The error as it leaves ``enqueue``: no traceback into the frames that held the caller's
    events, and not the exception it was raised while handling (a marshmallow error carries the
    input).  An error tracker that records every frame's variables of an uncaught exception, as
    sentry-sdk does by default, then finds no plaintext in the relay's frames: the caller drops
    its own copy (``del events``) before raising this."""
    error.__context__ = None
    error.__cause__ = None
    return error.with_traceback(None)
