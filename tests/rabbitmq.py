"""A private RabbitMQ vhost (and user) for one test session, for the tests that run the relay's
Celery workers with RabbitMQ as the broker.

Nothing here touches a vhost or user it did not create: :func:`private_vhost` adds a vhost
``cr-test-<random>`` and a user of the same name that may use that vhost only, yields an AMQP
URL for them, and deletes both afterwards. It administers RabbitMQ with ``rabbitmqctl`` (the
management plugin is not needed). :func:`unavailable_reason` says why that cannot be done here
(no broker listening, no ``rabbitmqctl``, no right to use it), or ``None`` when it can.

Environment:

- ``CONVERSION_RELAY_TEST_AMQP_HOST`` / ``..._PORT``: where the broker listens (default
  ``127.0.0.1:5672``; loopback only is the rule for these tests).
- ``CONVERSION_RELAY_TEST_RABBITMQ=require``: a missing broker fails the tests instead of
  skipping them (for machines that are meant to have one).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

HOST = os.environ.get("CONVERSION_RELAY_TEST_AMQP_HOST", "127.0.0.1")
PORT = int(os.environ.get("CONVERSION_RELAY_TEST_AMQP_PORT", "5672"))
PREFIX = "cr-test-"
#: ``rabbitmqctl`` starts an Erlang VM per call (about half a second); a hung node must not
#: hang the tests.
CTL_TIMEOUT = 30.0


def required() -> bool:
    """True when a missing RabbitMQ should fail the tests rather than skip them."""
    return os.environ.get("CONVERSION_RELAY_TEST_RABBITMQ", "").lower() in {"1", "require", "required", "yes"}


def rabbitmqctl_path() -> str | None:
    return shutil.which("rabbitmqctl") or next(
        (p for p in ("/usr/sbin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl") if os.path.exists(p)), None
    )


def ctl(*args: str, timeout: float = CTL_TIMEOUT) -> str:
    """Run ``rabbitmqctl -q ARGS``; its output, or RuntimeError with what it said."""
    path = rabbitmqctl_path()
    if path is None:
        raise RuntimeError("rabbitmqctl not found")
    try:
        done = subprocess.run([path, "-q", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"rabbitmqctl {args[0]} failed ({done.returncode}): {' / '.join(said[-3:])}")
    return done.stdout


def unavailable_reason(connect_timeout: float = 1.0) -> str | None:
    """Why no private vhost can be made here, or None when RabbitMQ is usable."""
    try:
        with socket.create_connection((HOST, PORT), timeout=connect_timeout):
            pass
    except OSError as exc:
        return f"no RabbitMQ reachable at {HOST}:{PORT} ({exc})"
    if rabbitmqctl_path() is None:
        return (
            f"something listens on {HOST}:{PORT}, but rabbitmqctl is not installed here, so no "
            "private vhost can be created (these tests never use an existing vhost)"
        )
    try:
        ctl("list_vhosts", timeout=15.0)
    except RuntimeError as exc:
        return (
            f"RabbitMQ listens on {HOST}:{PORT}, but rabbitmqctl cannot administer it ({exc}); "
            "run the tests as a user that may (root, or one with the node's Erlang cookie)"
        )
    return None


@dataclass(frozen=True)
class PrivateVhost:
    name: str
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{HOST}:{PORT}/{self.name}"

    def queues(self) -> dict[str, dict[str, Any]]:
        """The vhost's queues as RabbitMQ lists them: name -> {messages, consumers, durable}."""
        out = ctl("list_queues", "-p", self.name, "--formatter", "json", "name", "messages", "consumers", "durable")
        return {q["name"]: q for q in json.loads(out or "[]")}

    def exchanges(self) -> dict[str, str]:
        """The vhost's named exchanges: name -> type."""
        out = ctl("list_exchanges", "-p", self.name, "--formatter", "json", "name", "type")
        return {e["name"]: e["type"] for e in json.loads(out or "[]") if e["name"]}


@contextmanager
def private_vhost() -> Iterator[PrivateVhost]:
    """A fresh vhost and a user allowed there only, both deleted when the block ends."""
    name = PREFIX + secrets.token_hex(6)
    vhost = PrivateVhost(name=name, user=name, password=secrets.token_hex(16))
    created: list[tuple[str, str]] = []
    try:
        ctl("add_vhost", name, "--description", f"conversion-relay test session, pid {os.getpid()}")
        created.append(("delete_vhost", name))
        ctl("add_user", vhost.user, vhost.password)
        created.append(("delete_user", vhost.user))
        ctl("set_permissions", "-p", name, vhost.user, ".*", ".*", ".*")
        yield vhost
    except BaseException:
        _remove(created)  # the original error is the one to see
        raise
    errors = _remove(created)
    if errors:
        raise RuntimeError(f"could not remove the test vhost/user {name}: {'; '.join(errors)}")


def _remove(created: list[tuple[str, str]]) -> list[str]:
    """Delete what :func:`private_vhost` created (and nothing else), newest first."""
    errors = []
    for command, name in reversed(created):
        try:
            ctl(command, name)
        except RuntimeError as exc:
            errors.append(str(exc))
    return errors
