"""A test double for the host app's own tests: :class:`RecordingRelay`, no Redis, no vendor keys.

A web app's tests want to know what its code enqueued, and that the relay would have accepted
it, without a Redis server and every vendor's key.  ``RecordingRelay`` is the producer's own
checking code (:class:`~conversion_relay.client.prepare.Producer`: the real schemas, limits and
destination checks from the settings, the same errors) with the Redis script replaced by a
record per destination, in the form a drain reads (:class:`~conversion_relay.store.backlog.StoredEntry`).
The rules of the script are kept where a host app can meet them: ``max_backlog_events`` refuses
a full destination (``BacklogFullError``, the others store), and the same call again within
``enqueue_dedup_seconds`` is stored once.

With pytest the fixture ``conversion_relay_recorder`` (registered by the package's ``pytest11``
entry point) gives a fresh one per test and installs it: ``conversion_relay.contrib.django.get_relay()``
and the Flask extension's ``relay`` hand it out instead of a real relay meanwhile.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conversion_relay.client.explain import Explanation
from conversion_relay.client.limits import MAX_CALL_BYTES, MAX_CALL_ENTRIES
from conversion_relay.client.prepare import Call, SyncProducer, without_plaintext
from conversion_relay.config.settings import Settings, settings_from_document
from conversion_relay.config.source import builtin_document
from conversion_relay.errors import RelayError
from conversion_relay.store import backlog

__all__ = ["AsyncRecordingRelay", "RecordedCall", "RecordingRelay", "installed", "recording_settings"]

#: The Redis URL of a recorder's settings: a name that cannot resolve, as nothing connects.
RECORDING_REDIS_URL = "redis://recording-relay.invalid:6379/0"


def recording_settings(document: Mapping[str, Any] | str | Path | None = None) -> Settings:
    """Settings for a recorder, checked as a producer checks them, without Redis or keys.

    Args:
        document: a parsed configuration (``{"destinations": {...}}``), the path of a TOML
            file, or None for the built-in sandbox configuration (one destination per vendor).

    Raises:
        ConfigurationError: as for a producer, naming each bad key.
    """
    env = {"REDIS_URL": RECORDING_REDIS_URL}
    if document is None:
        return settings_from_document(builtin_document({}), env, sandbox=True)
    if isinstance(document, (str, Path)):
        with open(document, "rb") as fh:
            document = tomllib.load(fh)
    return settings_from_document(document, env)


@dataclass(frozen=True)
class RecordedCall:
    """A call the recorder stored: the checked call and the destinations that took it now
    (not those that held it already, nor the full ones)."""

    call: Call
    stored_in: tuple[str, ...]


class RecordingRelay(SyncProducer):
    """``Relay``'s ``enqueue``, ``enqueue_native``, ``prepare``, ``store`` and ``explain``, in memory.

    >>> relay = RecordingRelay()                           # the built-in sandbox configuration
    >>> relay.enqueue({"event_name": "Purchase", "event_id": "order-1",
    ...                "custom_data": {"value": 10, "currency": "EUR"}}, destinations=["gravity"])
    ['order-1']
    >>> [e["event_id"] for e in relay.events("gravity")]
    ['order-1']

    Attributes:
        stored: per configured destination, the entries a drain would read, in order.
        calls: each call that stored something, in order.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        document: Mapping[str, Any] | str | Path | None = None,
        max_call_entries: int = MAX_CALL_ENTRIES,
        max_call_bytes: int = MAX_CALL_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``settings``, or else ``document`` as :func:`recording_settings` takes it; ``clock``
        measures ``enqueue_dedup_seconds``."""
        super().__init__(
            settings or recording_settings(document), max_call_entries=max_call_entries, max_call_bytes=max_call_bytes
        )
        self.stored: dict[str, list[backlog.StoredEntry]] = {name: [] for name in self.settings.destinations}
        self.calls: list[RecordedCall] = []
        self._clock = clock
        self._held: dict[tuple[str, str], float] = {}
        self._failures: list[RelayError] = []

    def fail_next(self, error: RelayError) -> None:
        """Make the next call that would store raise ``error`` after its checks, storing
        nothing: an ``EnqueueError`` or ``BacklogFullError`` for the app's handling of them."""
        self._failures.append(error)

    def events(self, destination: str | None = None) -> list[dict[str, Any]]:
        """The canonical events stored, as stored (PII hashed, ids and times filled in): for
        ``destination``, or without one each event of every call once."""
        if destination is None:
            return [
                backlog.StoredEntry(r.call.kind, body).canonical_event()
                for r in self.calls
                if r.call.kind == backlog.CANONICAL
                for body in r.call.bodies
            ]
        return [entry.canonical_event() for entry in self._entries(destination) if entry.is_canonical]

    def native(self, destination: str) -> list[tuple[str | None, Any]]:
        """The vendor-native items stored for ``destination``: ``(operation, payload)`` each."""
        return [entry.native_item() for entry in self._entries(destination) if not entry.is_canonical]

    def event_ids(self, destination: str | None = None) -> list[str]:
        return [event["event_id"] for event in self.events(destination)]

    def clear(self) -> None:
        """Forget everything recorded, the dedup window's calls included."""
        for entries in self.stored.values():
            entries.clear()
        self.calls.clear()
        self._held.clear()
        self._failures.clear()

    @property
    def aio(self) -> AsyncRecordingRelay:
        """This recorder with ``AsyncRelay``'s coroutine methods, for an asyncio app."""
        return AsyncRecordingRelay(self)

    @contextmanager
    def install(self) -> Iterator[RecordingRelay]:
        """While inside, :func:`installed` returns this recorder: the integrations of
        :mod:`conversion_relay.contrib` hand it out instead of their real relay."""
        _installed.append(self)
        try:
            yield self
        finally:
            _installed.remove(self)

    def close(self) -> None:
        """Nothing to close; there for code that closes its relay."""

    def __enter__(self) -> RecordingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _entries(self, destination: str) -> list[backlog.StoredEntry]:
        self.settings.destination(destination)  # a ConfigurationError naming the configured ones
        return self.stored[destination]

    def _store(self, call: Call) -> None:
        """What the append script does with a call, apart from Redis's memory: a full
        destination refuses it, one that holds it already (within the dedup window) leaves it."""
        if not call.bodies:
            return
        if self._failures:
            raise self._failures.pop(0)
        now = self._clock()
        window = self.settings.enqueue_dedup_seconds
        full: dict[str, int] = {}
        open_: list[str] = []
        held = 0
        for target in call.plan:
            waiting = len(self.stored[target.name])
            key = (call.digest or "", target.name)
            if target.cap > 0 and waiting + len(call.bodies) > target.cap:
                full[target.name] = waiting
            elif call.digest and self._held.get(key, float("-inf")) > now:
                held += 1
            else:
                open_.append(target.name)
                if call.digest:
                    self._held[key] = now + window
        for name in open_:
            self.stored[name].extend(backlog.StoredEntry(call.kind, body) for body in call.bodies)
        if open_:
            self.calls.append(RecordedCall(call, tuple(open_)))
        self._settle(call, backlog.AppendResult(stored=len(open_), held=held, full=full))


class AsyncRecordingRelay:
    """A :class:`RecordingRelay` behind ``AsyncRelay``'s coroutine methods; records into it."""

    def __init__(self, recorder: RecordingRelay) -> None:
        self.recorder = recorder
        self.settings = recorder.settings

    async def enqueue(
        self,
        events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        destinations: Sequence[str] | None = None,
    ) -> list[str]:
        try:
            return self.recorder.enqueue(events, destinations=destinations)
        except RelayError as exc:
            error = exc
        del events  # see without_plaintext
        raise without_plaintext(error)

    async def enqueue_native(self, destination: str, payload: Any, *, operation: str | None = None) -> int:
        try:
            return self.recorder.enqueue_native(destination, payload, operation=operation)
        except RelayError as exc:
            error = exc
        del payload  # see without_plaintext
        raise without_plaintext(error)

    def prepare(
        self,
        events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        destinations: Sequence[str] | None = None,
    ) -> Call:
        return self.recorder.prepare(events, destinations=destinations)

    async def store(self, call: Call) -> list[str]:
        return self.recorder.store(call)

    def explain(
        self,
        events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        destinations: Sequence[str] | None = None,
    ) -> Explanation:
        return self.recorder.explain(events, destinations=destinations)

    async def aclose(self) -> None:
        """Nothing to close."""

    async def __aenter__(self) -> AsyncRecordingRelay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_installed: list[RecordingRelay] = []


def installed() -> RecordingRelay | None:
    """The recorder installed last (:meth:`RecordingRelay.install`, or the pytest fixture), if any."""
    return _installed[-1] if _installed else None
