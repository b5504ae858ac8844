"""The wheel in a web app (issue 10): built from this checkout, installed into a fresh virtualenv
beside a host app that has its own ``schemas``, ``tasks`` and ``worker`` packages, it enqueues
from the host app into a private Redis and leaves the host's packages alone.

The virtualenv gets the wheel alone (``--no-deps``); the dependencies come from the test's own
environment through a path entry, so nothing is downloaded but the build backend.  That path
entry does not activate the checkout's editable install (``.pth`` files are read only in site
directories), so what the host app imports is the installed wheel.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from conversion_relay.embedded import EmbeddedRedis
from conversion_relay.store import backlog

ROOT = Path(__file__).resolve().parents[1]

HOST_APP = textwrap.dedent(
    """
    import json, sys

    import schemas.canonical          # the host's own modules, named like the relay's old ones
    import tasks
    import worker

    import conversion_relay
    from conversion_relay import Relay

    relay = Relay()
    ids = relay.enqueue({"event_name": "Purchase", "event_id": "host-order-1",
                         "user_data": {"em": ["customer@example.com"]},
                         "custom_data": {"value": 12.5, "currency": "EUR"}})
    print(json.dumps({
        "ids": ids,
        "relay_from": conversion_relay.__file__,
        "host": [schemas.canonical.WHO, tasks.WHO, worker.WHO],
    }))
    """
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("conversion_relay-*.whl")
    return built


def test_the_wheel_installs_one_import_package(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {"conversion_relay"}
    assert "conversion_relay/py.typed" in names
    assert "conversion_relay/schemas/data/iso4217.json" in names


def test_a_host_app_with_its_own_schemas_tasks_and_worker_enqueues(wheel: Path, tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    host = tmp_path / "host"
    for package in ("schemas", "tasks", "worker"):
        (host / package).mkdir(parents=True)
        (host / package / "__init__.py").write_text(f"WHO = 'host {package}'\n")
    (host / "schemas" / "canonical.py").write_text("WHO = 'host schemas.canonical'\n")
    (host / "app.py").write_text(HOST_APP)

    with EmbeddedRedis(tmp_path / "redis") as server:
        env = {"PATH": os.environ.get("PATH", ""), "CONVERSION_RELAY_CONFIG": "sandbox", "REDIS_URL": server.url(0)}
        result = subprocess.run([str(python), "app.py"], cwd=host, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["ids"] == ["host-order-1"]
        assert report["relay_from"].startswith(purelib), report["relay_from"]
        assert report["host"] == ["host schemas.canonical", "host tasks", "host worker"]

        client = server.client()
        try:
            streams = [k for k in client.scan_iter("cr-sandbox:stream:*")]
            stored = [backlog.read(fields) for key in streams for _, fields in client.xrange(key)]
            assert stored and all(s.is_canonical for s in stored)
            events = [s.canonical_event() for s in stored]
            assert {e["event_id"] for e in events} == {"host-order-1"}
            assert all("customer@example.com" not in json.dumps(e) for e in events)
        finally:
            client.close()
