"""The shipped deployment files stay in step with the code."""

from __future__ import annotations

import configparser
from pathlib import Path

from worker.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_example_configuration_loads():
    settings = load_settings(
        {
            "CONVERSION_RELAY_CONFIG": str(ROOT / "deploy/conversion-relay.example.toml"),
            "GRAVITY_API_KEY": "k-123456",
            "GRAVITY_FIELD_API_KEY": "f-123456",
            "TRACIFY_API_KEY": "t-123456",
            "GRAVITY_RECO_PASSWORD": "r-123456",
        }
    )
    gravity = settings.destination("gravity")
    assert gravity.base_url == "https://api.trygravity.ai"
    assert gravity.api_key == "k-123456"
    assert settings.default_phone_region == "DE"
    assert sorted(settings.destinations) == ["field", "gravity", "reco", "tracify"]
    assert settings.destination("reco").base_url == (
        "https://mywebshop-ams.gravityrd-services.com/grrec-mywebshop-war/WebshopServlet"
    )
    assert settings.destination("field").rate_limit_per_second == 500


def test_process_files_start_the_celery_app():
    assert "celery -A worker.app worker" in (ROOT / "Procfile").read_text()
    supervisor = configparser.RawConfigParser()
    supervisor.read(ROOT / "deploy/supervisor/conversion-relay.conf")
    program = supervisor["program:conversion-relay"]
    assert "-A worker.app worker" in program["command"]
    assert program["stopsignal"] == "TERM"
    unit = (ROOT / "deploy/systemd/conversion-relay@.service").read_text()
    assert "-A worker.app worker" in unit and "EnvironmentFile=" in unit
