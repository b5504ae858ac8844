"""The shipped deployment files stay in step with the code."""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

from conversion_relay.config.settings import load_settings
from conversion_relay.vendors import adapter_classes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy/conversion-relay.example.toml"


def example_tables() -> dict[str, dict]:
    return tomllib.loads(EXAMPLE.read_text())["destinations"]


def test_every_destination_of_the_example_is_a_registered_vendor():
    """The example names vendors the registry knows (it need not list a vendor just added:
    adding one is its modules and tests, docs/design.md)."""
    vendors = [table["vendor"] for table in example_tables().values()]
    assert vendors and set(vendors) <= set(adapter_classes())


def test_example_configuration_loads():
    tables = example_tables()
    keys = {table["api_key_env"]: f"secret-{name}-123456" for name, table in tables.items()}
    settings = load_settings({"CONVERSION_RELAY_CONFIG": str(EXAMPLE), **keys})
    assert settings.default_phone_region == "DE"
    assert sorted(settings.destinations) == sorted(tables)
    for name, table in tables.items():
        destination = settings.destination(name)
        adapter = adapter_classes()[table["vendor"]]
        assert destination.vendor == table["vendor"]
        assert destination.api_key == f"secret-{name}-123456"
        # A vendor with a public base URL is shown at it; one built per customer is built.
        expected = table.get("base_url") or adapter.base_url_for(table)
        assert expected and destination.base_url == expected.rstrip("/")
        assert destination.base_url.startswith("https://")
        for key in ("max_events", "rate_limit_per_second", "parallel_drains"):
            if key in table:
                assert getattr(destination, key) == table[key], f"{name}.{key}"


def test_process_files_start_the_celery_app():
    assert "celery -A conversion_relay.worker.app worker" in (ROOT / "Procfile").read_text()
    supervisor = configparser.RawConfigParser()
    supervisor.read(ROOT / "deploy/supervisor/conversion-relay.conf")
    program = supervisor["program:conversion-relay"]
    assert "-A conversion_relay.worker.app worker" in program["command"]
    assert program["stopsignal"] == "TERM"
    unit = (ROOT / "deploy/systemd/conversion-relay@.service").read_text()
    assert "-A conversion_relay.worker.app worker" in unit and "EnvironmentFile=" in unit
