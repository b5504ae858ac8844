"""Redis with a password, an ACL user, and TLS: for the relay's data, the broker and the results.

Each Redis here is private to the test: one started with ``requirepass`` (and an ACL user), one
serving TLS only (``--port 0``) with a certificate signed by a CA generated into the test's
directory with the ``openssl`` command.  A real worker delivers through each to the sandbox, and
a ``relay.admin`` task's result comes back through the result backend.  Wrong credentials and a
certificate that cannot be verified stop the worker (and the CLI) with one line that carries no
password; certificate verification is on unless the URL turns it off.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from celery import Celery

from conversion_relay.embedded import EmbeddedRedis, TLSFiles
from conversion_relay.errors import ConfigurationError
from conversion_relay.sandbox import GravityCapiSandbox, SandboxServer
from conversion_relay.store.connection import redis_tls
from conversion_relay.worker.broker import celery_redis_conf
from tests.conftest import FAST_RELAY, Stack, gravity_destination
from tests.support import wait_for

PASSWORD = "s3cret/redis pass"  # a space and a slash: the URL must carry it percent-encoded
ACL_USER, ACL_PASSWORD = "relay", "acl-s3cret-0123"
#: The ACL rules docs/operations.md gives a relay user whose Redis is also the broker (Celery's
#: keys include queues named after each worker, so the keys are not narrowed; the commands are).
ACL_RULES = ("~*", "&*", "+@all", "-@dangerous", "+info")
WRONG_PASSWORD = "not-the-s3cret-9876"
#: os.EX_CONFIG: the worker's exit status when Redis refuses it for good.
EX_CONFIG = 78


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> TLSFiles:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.fail("these tests generate their certificates with the openssl command; install openssl")
    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=relay test CA",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", "server.crt", cwd=directory)  # fmt: skip
    return TLSFiles(cert_file=directory / "server.crt", key_file=directory / "server.key", ca_file=directory / "ca.crt")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def auth_redis() -> Iterator[EmbeddedRedis]:
    """A Redis that wants a password from the default user, and has an ACL user of its own."""
    server = EmbeddedRedis(databases=4, password=PASSWORD, users={ACL_USER: ACL_PASSWORD}, user_rules=ACL_RULES)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_redis(certificates: TLSFiles) -> Iterator[EmbeddedRedis]:
    """A Redis that serves TLS only (no plain port), and wants a password too."""
    try:
        server = EmbeddedRedis(databases=4, password=PASSWORD, tls=certificates)
    except RuntimeError as exc:
        pytest.fail(f"{exc}: these tests need a redis-server built with TLS (Debian's and Ubuntu's are)")
    yield server
    server.stop()


class Urls:
    """The data and broker URLs of one server (database 1 and 0, as in the other tests), in
    the shape :class:`~tests.conftest.Stack` takes a server in."""

    def __init__(self, server: EmbeddedRedis, **credentials: Any) -> None:
        self.server = server
        self.data = server.url(1, **credentials)
        self.broker = server.url(0, **credentials)

    def url(self, db: int) -> str:
        return {1: self.data, 0: self.broker}[db]


@pytest.fixture
def build(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Any]:
    """Build a stack (one gravity destination) whose every client uses the given URLs."""
    stacks: list[Stack] = []

    def make(urls: Urls) -> Stack:
        directory = tmp_path / f"stack-{len(stacks)}"
        directory.mkdir()
        stack = Stack(urls, directory, dict(FAST_RELAY), {"gravity": gravity_destination(sandbox)})  # type: ignore[arg-type]
        admin = redis.Redis.from_url(urls.server.url(1))  # FLUSHDB is not the relay user's to run
        admin.flushdb()
        admin.close()
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


def purchase(i: int) -> dict[str, Any]:
    return {"event_name": "Purchase", "event_id": f"sec-{i}", "custom_data": {"value": 1.0, "currency": "EUR"}}


def celery_client(stack: Stack) -> Celery:
    """A Celery client of the relay's broker and result backend, as another program would build
    one: the same URLs, and the TLS options the relay derives from them."""
    conf = celery_redis_conf(stack.settings)
    app = Celery(broker=conf["broker_url"], backend=conf["result_backend"])
    app.conf.update(**conf, task_serializer="json", accept_content=["json"], result_serializer="json")
    return app


def deliver_and_ask_status(stack: Stack, gravity: GravityCapiSandbox) -> dict[str, Any]:
    """Events through a real worker to the sandbox; then the ``relay.admin`` status, whose
    result comes back through the result backend."""
    worker = stack.start_worker()
    stack.relay.enqueue([purchase(i) for i in range(50)])
    wait_for(lambda: gravity.counters["ok"] == 50, what="50 events at the sandbox")
    stack.wait_settled()
    client = celery_client(stack)
    try:
        status = client.send_task("relay.admin", args=["status"], queue="relay.admin").get(timeout=30)
    finally:
        client.close()
    output = worker.output()
    assert_no_password(output)
    assert "no permissions" not in output and "Traceback" not in output, output[-3000:]
    assert "relay.admin" in output and " ready." in output
    return status


def test_a_password_protected_redis_serves_data_broker_and_results(auth_redis, build, gravity):
    stack = build(Urls(auth_redis))
    status = deliver_and_ask_status(stack, gravity)
    assert status["gravity"]["counters"]["delivered"] == 50
    banner = stack.workers[0].output()
    assert f"redis://:**@127.0.0.1:{auth_redis.port}/1" in banner  # results: masked by Celery


def test_an_acl_user_serves_data_broker_and_results(auth_redis, build, gravity):
    """With only the keys, channels and commands docs/operations.md names."""
    observer = auth_redis.client()
    earlier = {int(c["id"]) for c in observer.client_list()}  # this one, and earlier tests' idle ones
    try:
        stack = build(Urls(auth_redis, user=ACL_USER, password=ACL_PASSWORD))
        status = deliver_and_ask_status(stack, gravity)
        assert status["gravity"]["counters"]["delivered"] == 50
        users = {c["user"] for c in observer.client_list() if int(c["id"]) not in earlier}
    finally:
        observer.close()
    assert users == {ACL_USER}, users  # every connection of the worker and the producer


def test_a_tls_only_redis_serves_data_broker_and_results(tls_redis, build, gravity):
    with pytest.raises(redis.ConnectionError):  # no plain port: TLS or nothing
        redis.Redis(port=tls_redis.port, password=PASSWORD, socket_timeout=2).ping()
    urls = Urls(tls_redis)
    assert urls.data.startswith("rediss://") and "ssl_cert_reqs" not in urls.data  # verification by default
    stack = build(urls)
    status = deliver_and_ask_status(stack, gravity)
    assert status["gravity"]["counters"]["delivered"] == 50
    output = stack.workers[0].output()
    assert "insecure" not in output.lower() and "CERT_NONE" not in output, output[-2000:]


def run_worker(stack: Stack, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``celery -A conversion_relay.worker.app worker`` as an operator starts it, until it exits (it must: a
    worker still running after ``timeout`` is killed with its pool and fails the test)."""
    args = [sys.executable, "-m", "celery", "-A", "conversion_relay.worker.app", "worker", "--loglevel=INFO",
            "--concurrency=1", "--without-mingle", "--without-gossip", "--without-heartbeat"]  # fmt: skip
    proc = subprocess.Popen(args, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the worker kept running against an unusable Redis:\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, WRONG_PASSWORD, ACL_PASSWORD):
            assert secret not in text and quote(secret, safe="") not in text, "a Redis password in the output"


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conversion_relay.cli", *args], env=stack.env, capture_output=True, text=True, timeout=60
    )


def relay_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("conversion-relay:")]


def test_a_wrong_password_stops_the_worker_and_the_cli_with_one_line(auth_redis, build):
    stack = build(Urls(auth_redis))
    for name in ("REDIS_URL", "CONVERSION_RELAY_BROKER_URL"):
        stack.env[name] = stack.env[name].replace(auth_redis.url(0).split("@")[0], f"redis://:{WRONG_PASSWORD}")
    assert WRONG_PASSWORD in stack.env["REDIS_URL"]
    refused = f"Redis at 127.0.0.1:{auth_redis.port} refused the credentials (AuthenticationError)"

    worker = run_worker(stack)
    assert worker.returncode == EX_CONFIG, worker.stderr[-3000:]
    assert relay_lines(worker) == [f"conversion-relay: {refused}; check REDIS_URL."], worker.stderr[-3000:]
    assert "Traceback" not in worker.stderr

    cli = run_cli(stack, "status")
    assert cli.returncode == 3, cli.stderr
    assert len(cli.stderr.splitlines()) == 1 and refused in cli.stderr, cli.stderr
    assert_no_password(worker.stdout, worker.stderr, cli.stdout, cli.stderr)


def test_a_certificate_that_does_not_verify_stops_the_worker(tls_redis, build):
    """Without ``ssl_ca_certs`` the system's CAs are used, which did not sign the test server's
    certificate: verification is on by default, and its failure is one line."""
    stack = build(Urls(tls_redis))
    for name in ("REDIS_URL", "CONVERSION_RELAY_BROKER_URL"):
        stack.env[name] = stack.env[name].split("?", 1)[0]
    worker = run_worker(stack)
    assert worker.returncode == EX_CONFIG, worker.stderr[-3000:]
    assert relay_lines(worker) == [
        f"conversion-relay: TLS to Redis at 127.0.0.1:{tls_redis.port} failed (CERTIFICATE_VERIFY_FAILED); "
        "check REDIS_URL (rediss://, ssl_ca_certs)."
    ], worker.stderr[-3000:]
    assert_no_password(worker.stdout, worker.stderr)


def test_verification_can_be_turned_off_only_explicitly_and_is_then_reported(tls_redis, build, gravity):
    urls = Urls(tls_redis)
    for name in ("data", "broker"):
        setattr(urls, name, getattr(urls, name).split("?", 1)[0] + "?ssl_cert_reqs=none")
    stack = build(urls)
    status = deliver_and_ask_status(stack, gravity)
    assert status["gravity"]["counters"]["delivered"] == 50
    assert "does not verify the server's certificate" in stack.workers[0].output()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"ssl_cert_reqs": ssl.CERT_REQUIRED}),
        ("?ssl_ca_certs=/etc/ca.pem", {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem"}),
        ("?ssl_cert_reqs=optional&ssl_check_hostname=false",
         {"ssl_cert_reqs": ssl.CERT_OPTIONAL, "ssl_check_hostname": False}),
        ("?ssl_cert_reqs=none", {"ssl_cert_reqs": ssl.CERT_NONE}),
    ],
)  # fmt: skip
def test_celery_gets_the_tls_options_of_a_rediss_url_with_verification_by_default(query, expected):
    url, options = redis_tls(f"rediss://:{PASSWORD}@redis.internal:6380/1{query}", "REDIS_URL")
    assert options == expected
    assert url == f"rediss://:{PASSWORD}@redis.internal:6380/1"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis://:pw@redis.internal:6379/1?ssl_ca_certs=/etc/ca.pem", "use a rediss:// URL"),
        ("rediss://:pw@redis.internal:6380/1?ssl_cert_reqs=CERT_MAYBE", "use required (the default), optional or none"),
        ("rediss://:pw@redis.internal:6380/1?ssl_ca_cert=/etc/ca.pem", "unknown TLS option ssl_ca_cert"),
        ("rediss://:pw@redis.internal:6380/1?ssl_check_hostname=perhaps", "ssl_check_hostname must be true or false"),
    ],
)
def test_tls_options_that_would_be_ignored_or_misread_are_refused_without_the_url(url, complaint):
    with pytest.raises(ConfigurationError) as refused:
        redis_tls(url, "REDIS_URL")
    assert complaint in str(refused.value) and str(refused.value).startswith("REDIS_URL: ")
    assert ":pw@" not in str(refused.value)


def test_plain_and_rabbitmq_urls_pass_through_untouched():
    for url in ("redis://:pw@redis.internal:6379/0", "amqps://relay:pw@rabbit.internal:5671/relay"):
        assert redis_tls(url, "CONVERSION_RELAY_BROKER_URL") == (url, None)
