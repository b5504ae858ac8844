"""The producer: the one call a web app makes.

``Relay.enqueue`` validates and hashes in the calling process, then stores the events with one
Redis command (a script appending each event to its partition of every target destination).  It
never talks to Celery or to a vendor, so it costs a schema load and a Redis round trip, and for
each destination either every event of the call is stored or none is.  The checks are
:class:`~conversion_relay.client.prepare.Producer`'s, shared with the asyncio producer
(:mod:`conversion_relay.client.aio`); this module only runs the script.
"""

from __future__ import annotations

import redis

from conversion_relay.client.limits import MAX_CALL_BYTES, MAX_CALL_ENTRIES
from conversion_relay.client.prepare import Call, SyncProducer, enqueue_error
from conversion_relay.config.settings import Settings
from conversion_relay.store import backlog
from conversion_relay.store.connection import connect


class Relay(SyncProducer):
    """Validates, hashes and enqueues conversion events.

    Create one per process and reuse it: it holds a Redis connection pool.

    >>> relay = Relay()                                    # settings from the environment
    >>> relay.enqueue({"event_name": "Purchase", "event_id": "order-123",
    ...                "user_data": {"em": ["customer@example.com"]},
    ...                "custom_data": {"value": 99.99, "currency": "EUR"}})
    ['order-123']
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_call_entries: int = MAX_CALL_ENTRIES,
        max_call_bytes: int = MAX_CALL_BYTES,
    ) -> None:
        """``max_call_entries`` and ``max_call_bytes`` bound what one call writes (events x
        destinations, and their bytes): Redis serves nothing else while a call is stored."""
        super().__init__(settings, max_call_entries=max_call_entries, max_call_bytes=max_call_bytes)
        self.redis = connect(self.settings.redis_url, socket_timeout=self.settings.enqueue_timeout_seconds)
        self._append = self.redis.register_script(backlog.APPEND_SCRIPT)

    def _store(self, call: Call) -> None:
        if not call.bodies:
            return
        keys, args = self._command(call)
        try:
            try:
                # EVALSHA directly: redis-py's Script wrapper costs a fifth of the round trip.
                reply = self.redis.execute_command("EVALSHA", self._append.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                reply = self._append(keys=keys, args=args)  # loads the script, then runs it
        except redis.RedisError as exc:
            raise enqueue_error(exc, self.redis.connection_pool.connection_kwargs, call.ids) from None
        self._settle(call, backlog.append_result(reply, call.plan))

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
