"""Shared fixtures: a private Redis, the vendor sandbox, and relay stacks with real workers.

The broker uses database 0 of the private Redis and the relay's data database 1, so a test can
wipe the relay's data without touching Celery's queue bindings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from conversion_relay import Relay
from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.ops.admin import Admin
from conversion_relay.sandbox import VENDOR_SANDBOXES, GravityCapiSandbox, SandboxServer
from conversion_relay.store.deadletter import Selection
from conversion_relay.store.keys import Keys
from tests.support import RedisServer, WorkerProcess, wait_for, write_config

BROKER_DB = 0
DATA_DB = 1
API_KEY = "sandbox-key"
KEY_ENV = "TEST_GRAVITY_KEY"

#: Engine settings that keep the tests quick: short deadlines, backoff and ticks.
FAST_RELAY: dict[str, Any] = {
    "flush_deadline_seconds": 0.2,
    "backoff_base_seconds": 0.05,
    "backoff_cap_seconds": 0.4,
    "tick_seconds": 0.05,
    "lease_seconds": 2.0,
    "drain_budget_seconds": 5.0,
    "visibility_timeout_seconds": 30.0,
}


def destination(vendor: str, base_url: str, **overrides: Any) -> dict[str, Any]:
    table = {
        "vendor": vendor,
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "connect_timeout_seconds": 1.0,
        "read_timeout_seconds": 2.0,
    }
    table.update(overrides)
    return table


def gravity_destination(sandbox: SandboxServer, **overrides: Any) -> dict[str, Any]:
    return destination("gravity_capi", sandbox.url_for("gravity-capi"), **overrides)


def field_destination(sandbox: SandboxServer, **overrides: Any) -> dict[str, Any]:
    return destination("gravity_field", sandbox.url_for("gravity-field"), **overrides)


def tracify_destination(sandbox: SandboxServer, **overrides: Any) -> dict[str, Any]:
    csid = {"customer_site_id": "00000000-0000-0000-0000-000000000000"}
    return destination("tracify", sandbox.url_for("tracify"), **{**csid, **overrides})


def reco_destination(sandbox: SandboxServer, **overrides: Any) -> dict[str, Any]:
    base = sandbox.url_for("gravity-reco") + "/grrec-shop-war/WebshopServlet"
    return destination("gravity_reco", base, **{"username": "sandbox", **overrides})


def all_destinations(sandbox: SandboxServer) -> dict[str, dict[str, Any]]:
    """One destination of each vendor, all at the sandbox."""
    return {
        "gravity": gravity_destination(sandbox),
        "field": field_destination(sandbox),
        "tracify": tracify_destination(sandbox),
        "reco": reco_destination(sandbox),
    }


class Stack:
    """One configuration of the relay: its file, environment, producer, data and workers."""

    def __init__(
        self,
        server: RedisServer,
        directory: Path,
        relay: dict[str, Any],
        destinations: dict[str, dict[str, Any]],
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.config = write_config(directory / "relay.toml", relay, destinations)
        self.env = {
            **os.environ,
            "REDIS_URL": server.url(DATA_DB),
            "CONVERSION_RELAY_BROKER_URL": server.url(BROKER_DB),
            "CONVERSION_RELAY_CONFIG": str(self.config),
            KEY_ENV: API_KEY,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.env.pop("SENTRY_DSN", None)
        self.settings: Settings = load_settings(self.env)
        self.redis = redis.Redis.from_url(server.url(DATA_DB))
        self.keys = Keys(self.settings.key_prefix)
        self.admin = Admin(self.settings, self.redis)
        self.workers: list[WorkerProcess] = []
        self._relay: Relay | None = None

    @property
    def relay(self) -> Relay:
        if self._relay is None:
            self._relay = Relay(self.settings)
        return self._relay

    def start_worker(self, concurrency: int = 2) -> WorkerProcess:
        log = self.directory / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.env, log, concurrency=concurrency)
        self.workers.append(worker)
        return worker

    def counters(self, destination: str = "gravity") -> dict[str, int]:
        return self.admin.status()[destination]["counters"]

    def dead_letters(self, destination: str | None = None) -> list[Any]:
        return list(self.admin.letters.select(Selection(destination=destination)))

    def settled(self, destination: str = "gravity") -> bool:
        """Nothing unread, in flight or waiting for the destination."""
        status = self.admin.status()[destination]
        backlog = status["backlog"]
        return backlog["unread"] == 0 and backlog["pending"] == 0 and status["waiting_batches"] == 0

    def wait_settled(self, destination: str = "gravity", timeout: float = 30.0) -> None:
        wait_for(lambda: self.settled(destination), timeout=timeout, what=f"{destination} to settle")

    def reset_data(self) -> None:
        self.redis.flushdb()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._relay is not None:
            self._relay.close()
        self.redis.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """Every vendor's sandbox, with the default credentials (key ``sandbox-key``)."""
    server = SandboxServer({prefix: factory() for prefix, factory in VENDOR_SANDBOXES.items()}).start()
    yield server
    server.stop()


def _fresh(sandbox: SandboxServer, prefix: str) -> Iterator[Any]:
    vendor = sandbox.vendor(prefix)
    vendor.reset()
    yield vendor
    # A request the relay gave up on (timeout) may still be running; let it finish here.
    wait_for(lambda: vendor.in_flight == 0, timeout=15, what="the sandbox to finish its requests")
    vendor.reset()


@pytest.fixture
def gravity(sandbox: SandboxServer) -> Iterator[GravityCapiSandbox]:
    yield from _fresh(sandbox, "gravity-capi")


@pytest.fixture
def field(sandbox: SandboxServer) -> Iterator[Any]:
    yield from _fresh(sandbox, "gravity-field")


@pytest.fixture
def tracify(sandbox: SandboxServer) -> Iterator[Any]:
    yield from _fresh(sandbox, "tracify")


@pytest.fixture
def reco(sandbox: SandboxServer) -> Iterator[Any]:
    yield from _fresh(sandbox, "gravity-reco")


@pytest.fixture
def data(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The relay's data database, empty at the start of the test."""
    client = redis.Redis.from_url(redis_server.url(DATA_DB))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def make_stack(redis_server: RedisServer, sandbox: SandboxServer, tmp_path: Path) -> Iterator[Any]:
    """Build a stack with its own configuration (and workers) for one test."""
    stacks: list[Stack] = []

    def build(
        relay: dict[str, Any] | None = None, destinations: dict[str, dict[str, Any]] | None = None, **env: str
    ) -> Stack:
        directory = tmp_path / f"stack-{len(stacks)}"
        directory.mkdir()
        stack = Stack(
            redis_server,
            directory,
            {**FAST_RELAY, **(relay or {})},
            destinations or {"gravity": gravity_destination(sandbox)},
            extra_env=env,
        )
        stack.reset_data()
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="module")
def shared_stack(
    redis_server: RedisServer, sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One worker for a whole module, with the standard fast configuration and two destinations:
    ``gravity`` (vendor limits) and ``small`` (10 events or 4,000 bytes a request)."""
    directory = tmp_path_factory.mktemp("shared")
    stack = Stack(
        redis_server,
        directory,
        dict(FAST_RELAY),
        {
            "gravity": gravity_destination(sandbox),
            "small": gravity_destination(sandbox, max_events=10, max_bytes=4000),
        },
    )
    stack.reset_data()
    stack.start_worker()
    yield stack
    stack.close()


@pytest.fixture
def stack(shared_stack: Stack, gravity: GravityCapiSandbox) -> Iterator[Stack]:
    """The module's shared stack, with empty data and a fresh sandbox for this test."""
    for name in shared_stack.settings.destinations:
        shared_stack.wait_settled(name)
    shared_stack.reset_data()
    yield shared_stack
    gravity.configure(fail_all_status=None)


@pytest.fixture
def client(stack: Stack) -> Iterator[Celery]:
    """A Celery client of the stack's broker and result backend, for sending the relay's tasks."""
    app = Celery(broker=stack.env["CONVERSION_RELAY_BROKER_URL"], backend=stack.settings.redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    yield app
    app.close()
