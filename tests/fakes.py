"""The only stand-ins the engine tests use: a clock, randomness and the HTTP transport.

Everything else stays real -- Redis (a private server), the vendor adapters, the stores and the
engine -- so the engine tests check what the engine writes to Redis, not what a mock was told.

- :class:`FakeClock` is epoch time that moves only when told (``sleep`` moves it too), so a
  backoff, a budget or a deadline is reached in no time and at an exact instant.
- :class:`FixedRandom` pins the jitter, so a due time is a number a test can write down.
- :class:`FakeTransport` is the real :class:`~conversion_relay.engine.transport.Transport` with its
  ``requests`` session swapped for a scripted one: each request gets the next scripted reply (a
  status, headers such as ``Retry-After`` and a body, or a network error the real transport
  turns into its outcome), and every request is recorded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis
import requests
from requests.structures import CaseInsensitiveDict

from conversion_relay.config.settings import Settings, settings_from_document
from conversion_relay.engine.transport import Transport
from conversion_relay.store.keys import GROUP, Keys
from conversion_relay.vendors.destination import DestinationSettings

#: The environment variable the test destinations read their API key from, and the key.
KEY_ENV = "ENGINE_TEST_KEY"
API_KEY = "engine-test-key-0123456789"
#: A base URL nothing listens on: the fake transport never opens a connection.
UNUSED_URL = "http://127.0.0.1:9"


class FakeClock:
    """Epoch seconds that pass only when a test (or ``sleep``) says so.

    Start it at Redis's time (:meth:`at_redis_time`) when the code under test compares it with
    stream entry ids, which Redis stamps with its own clock.
    """

    def __init__(self, now: float) -> None:
        self.now = now
        #: Every ``sleep`` asked for, in order.
        self.sleeps: list[float] = []

    @classmethod
    def at_redis_time(cls, client: redis.Redis) -> FakeClock:
        seconds, micros = client.time()
        return cls(seconds + micros / 1_000_000)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


def at(epoch_seconds: float) -> Any:
    """An epoch time to compare with to the microsecond: ``pytest.approx``'s default relative
    tolerance is half an hour at today's epoch."""
    return pytest.approx(epoch_seconds, rel=0, abs=1e-6)


class FixedRandom:
    """``random.random`` that always returns ``value`` (a test may change it between calls)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


@dataclass(frozen=True)
class Reply:
    """A scripted HTTP response."""

    status: int = 200
    body: bytes | Mapping[str, Any] | list[Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)


@dataclass(frozen=True)
class SentRequest:
    """One request the engine made, as it would have left."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] | None
    #: The transport's total timeout, as the real session would have been given it.
    timeout_seconds: float | None
    allow_redirects: bool
    #: The fake clock when the request left.
    at: float

    def json(self) -> Any:
        return orjson.loads(self.body)


#: What a request can be answered with: a reply, an exception the session raises (a
#: ``requests`` network error, or anything else to stand for a crash), or a function of the
#: request giving either (a hook to interfere at the moment a request is in flight).
Answer = Reply | BaseException | Callable[[SentRequest], "Reply | BaseException"]


def connection_refused() -> requests.ConnectionError:
    return requests.ConnectionError("refused", request=None)


def read_timeout() -> requests.ReadTimeout:
    return requests.ReadTimeout("no answer")


class _ScriptedResponse:
    def __init__(self, reply: Reply) -> None:
        self.status_code = reply.status
        self.headers = CaseInsensitiveDict(dict(reply.headers))
        self.content = reply.content


class FakeTransport(Transport):
    """The real transport, answering from a script instead of the network.

    Args:
        destination: the destination's settings, as :class:`Transport` takes them.
        clock: stamps each request, and is moved by ``request_seconds`` while one is "in flight".
        default: answers a request when the script is empty; without one such a request fails
            the test (``AssertionError``), so a test states every request it expects.
    """

    def __init__(
        self,
        destination: DestinationSettings,
        *,
        clock: FakeClock | None = None,
        request_seconds: float = 0.0,
        default: Answer | None = None,
    ) -> None:
        super().__init__(destination)
        self.session.close()
        self.session = _ScriptedSession(self)  # type: ignore[assignment]
        self.clock = clock
        self.request_seconds = request_seconds
        self.default = default
        self.script: deque[Answer] = deque()
        self.requests: list[SentRequest] = []

    def answer(self, *answers: Answer) -> FakeTransport:
        """Queue answers for the next requests, in order."""
        self.script.extend(answers)
        return self

    def _respond(self, sent: SentRequest) -> _ScriptedResponse:
        self.requests.append(sent)
        if self.script:
            answer = self.script.popleft()
        elif self.default is not None:
            answer = self.default
        else:
            raise AssertionError(f"unexpected request {len(self.requests)} to {sent.url}: nothing scripted")
        if self.clock is not None:
            self.clock.advance(self.request_seconds)
        if callable(answer) and not isinstance(answer, BaseException):
            answer = answer(sent)
        if isinstance(answer, BaseException):
            raise answer
        return _ScriptedResponse(answer)


class _ScriptedSession:
    """The one ``requests.Session`` method the transport calls."""

    def __init__(self, transport: FakeTransport) -> None:
        self._transport = transport

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: Any = None,
        allow_redirects: bool = True,
    ) -> _ScriptedResponse:
        clock = self._transport.clock
        sent = SentRequest(
            method=method,
            url=url,
            headers=dict(headers or {}),
            body=data,
            params=params,
            timeout_seconds=getattr(timeout, "total", None),
            allow_redirects=allow_redirects,
            at=clock() if clock is not None else time.time(),
        )
        return self._transport._respond(sent)

    def close(self) -> None:
        pass


def gravity_table(**overrides: Any) -> dict[str, Any]:
    """A Gravity Conversions API destination (per-event results) that only fakes ever answer."""
    return {"vendor": "gravity_capi", "base_url": UNUSED_URL, "api_key_env": KEY_ENV, **overrides}


def tracify_table(**overrides: Any) -> dict[str, Any]:
    """A Tracify destination: it judges a request whole, so a refused batch is split."""
    csid = "00000000-0000-0000-0000-000000000000"
    return {
        "vendor": "tracify",
        "base_url": UNUSED_URL,
        "api_key_env": KEY_ENV,
        "customer_site_id": csid,
        **overrides,
    }


def engine_settings(redis_url: str, destinations: Mapping[str, Mapping[str, Any]], **relay: Any) -> Settings:
    """Settings as the loader makes them from a file, for destinations answered by fakes."""
    document = {"relay": relay, "destinations": {name: dict(table) for name, table in destinations.items()}}
    return settings_from_document(document, {"REDIS_URL": redis_url, KEY_ENV: API_KEY})


def stats_of(client: redis.Redis, settings: Settings, destination: str) -> dict[str, int]:
    """The destination's counters hash as Redis holds it (field names as the store writes them)."""
    key = Keys(settings.key_prefix).stats(destination)
    return {k.decode(): int(v) for k, v in client.hgetall(key).items()}


# What the engine left in Redis, read raw: the field names and values as the stores write them,
# so the tests hold whatever Python names the stores give them.


def dead_letters_of(client: redis.Redis, settings: Settings, destination: str) -> list[dict[str, Any]]:
    """The destination's dead letters, oldest first, each hash with ``parts`` and ``errors`` decoded."""
    keys = Keys(settings.key_prefix)
    letters = []
    for letter_id in client.zrange(keys.dlq_for(destination), 0, -1):
        raw = {k.decode(): v.decode() for k, v in client.hgetall(keys.dlq_entry(letter_id.decode())).items()}
        raw["parts"] = [_decoded(p) for p in orjson.loads(raw["parts"])]
        raw["errors"] = orjson.loads(raw.get("errors") or "{}")
        letters.append(raw)
    return letters


def waiting_of(client: redis.Redis, settings: Settings, destination: str) -> list[dict[str, Any]]:
    """The destination's waiting batches, soonest first, with ``due`` (their score) and ``parts`` decoded."""
    keys = Keys(settings.key_prefix)
    batches = []
    for batch_id, due in client.zrange(keys.retry(destination), 0, -1, withscores=True):
        raw = {k.decode(): v.decode() for k, v in client.hgetall(keys.batch(destination, batch_id.decode())).items()}
        raw["parts"] = [orjson.loads(p) for p in orjson.loads(raw["parts"])]
        raw["due"] = due
        batches.append(raw)
    return batches


def stream_of(client: redis.Redis, settings: Settings, destination: str, partition: int = 0) -> dict[str, int]:
    """Entries the partition's stream still holds, and how many of them are handed out."""
    key = Keys(settings.key_prefix).stream(destination, partition)
    pending = client.xpending(key, GROUP)["pending"] if client.exists(key) and client.xinfo_groups(key) else 0
    return {"length": int(client.xlen(key)), "pending": int(pending)}


def paused_until(client: redis.Redis, settings: Settings, destination: str) -> float | None:
    """Until when the destination backs off (the pause key's value), or ``None``."""
    value = client.get(Keys(settings.key_prefix).pause(destination))
    return None if value is None else float(value)


def _decoded(part: str) -> Any:
    """A vendor payload as JSON; a stored entry that never became one (``mapping_error``) as is."""
    try:
        return orjson.loads(part)
    except orjson.JSONDecodeError:
        return part
