"""The producer for asyncio apps (FastAPI, Starlette, aiohttp): :class:`AsyncRelay`.

A sync ``Relay.enqueue`` inside a coroutine holds the event loop for the Redis round trip, and
for as long as Redis is slow: every other request of the process waits meanwhile.  ``AsyncRelay``
awaits the round trip on ``redis.asyncio`` instead.  Everything before Redis is the sync
producer's own code (:class:`~conversion_relay.client.prepare.Producer`): the same schemas,
limits, destination checks, errors and all-or-nothing script; validation and hashing run in the
loop, as they cost microseconds per event (a bulk call of thousands of events costs
milliseconds: send those from a worker thread with ``Relay``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from conversion_relay.client.limits import MAX_CALL_BYTES, MAX_CALL_ENTRIES
from conversion_relay.client.prepare import Call, Producer, enqueue_error, without_plaintext
from conversion_relay.config.settings import Settings
from conversion_relay.errors import RelayError
from conversion_relay.store import backlog
from conversion_relay.store.connection import connect_async


class AsyncRelay(Producer):
    """Validates, hashes and enqueues conversion events from asyncio code.

    Create one per process and event loop (in the app's lifespan, say) and close it with
    :meth:`aclose`, or use it as ``async with AsyncRelay() as relay``.  It connects on first use.

    >>> relay = AsyncRelay()                               # settings from the environment
    >>> await relay.enqueue({"event_name": "Purchase", "event_id": "order-123",
    ...                      "custom_data": {"value": 99.99, "currency": "EUR"}})
    ['order-123']
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_call_entries: int = MAX_CALL_ENTRIES,
        max_call_bytes: int = MAX_CALL_BYTES,
    ) -> None:
        super().__init__(settings, max_call_entries=max_call_entries, max_call_bytes=max_call_bytes)
        self.redis = connect_async(self.settings.redis_url, socket_timeout=self.settings.enqueue_timeout_seconds)
        self._append = self.redis.register_script(backlog.APPEND_SCRIPT)

    async def enqueue(
        self,
        events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        destinations: Sequence[str] | None = None,
    ) -> list[str]:
        """``Relay.enqueue``, awaiting Redis: the same arguments, result and errors.

        Raises:
            EventValidationError: before anything is sent; nothing stored.
            BacklogFullError: a destination is full (``full``); the others stored (``stored_in``).
            EnqueueError: Redis could not take the events; ``maybe_stored`` after a timeout
                (retry with ``exc.event_ids``).  A call cancelled while it waits for Redis is in
                the same state: retry it with the same ``event_id``s.
        """
        try:
            call = self._prepare(events, destinations)
            await self._store(call)
            return list(call.ids)
        except RelayError as exc:
            error = exc
        del events  # see without_plaintext
        raise without_plaintext(error)

    async def enqueue_native(self, destination: str, payload: Any, *, operation: str | None = None) -> int:
        """``Relay.enqueue_native``, awaiting Redis; returns the number of items stored."""
        try:
            call = self._prepare_native(destination, payload, operation)
            await self._store(call)
            return len(call.bodies)
        except RelayError as exc:
            error = exc
        del payload  # see without_plaintext
        raise without_plaintext(error)

    async def store(self, call: Call) -> list[str]:
        """Store a call :meth:`prepare` checked earlier; returns its event ids."""
        try:
            await self._store(call)
        except RelayError as exc:
            error = exc
        else:
            return list(call.ids)
        raise without_plaintext(error)

    async def _store(self, call: Call) -> None:
        if not call.bodies:
            return
        keys, args = self._command(call)
        try:
            try:
                reply = await self.redis.execute_command("EVALSHA", self._append.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                reply = await self._append(keys=keys, args=args)  # loads the script, then runs it
        except redis.RedisError as exc:
            raise enqueue_error(exc, self.redis.connection_pool.connection_kwargs, call.ids) from None
        self._settle(call, backlog.append_result(reply, call.plan))

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncRelay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
