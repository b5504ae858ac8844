"""The relay configuration of a scenario, written so that it loads on the engine under test.

The chaos suite runs against more than one version of the engine (the committed one for the
"before" figures, the rewritten one after), and the two do not take the same keys.  A scenario
therefore names its optional keys, and a key the engine refuses (unknown, or renamed) is left
out and noted, rather than failing the run: ``max_backlog_events`` on an engine without a
per-destination cap is recorded as "not supported by this version".
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.embedded import write_config
from conversion_relay.errors import ConfigurationError
from conversion_relay.sandbox import sandbox_classes

KEY_ENV = "CHAOS_API_KEY"
API_KEY = "sandbox-key"
BROKER_DB = 0
DATA_DB = 1
#: Keys a destination table must keep; every other key may be dropped if the engine refuses it.
REQUIRED_KEYS = frozenset({"vendor", "base_url", "api_key_env", "username", "customer_site_id"})
_PROBLEM = re.compile(r"(relay|destinations\.[a-z][a-z0-9_-]*)\.([a-z_]+): ([^\n]*)")


def relay_env(redis_port: int, config: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/{DATA_DB}",
        "CONVERSION_RELAY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/{BROKER_DB}",
        "CONVERSION_RELAY_CONFIG": str(config),
        KEY_ENV: API_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("SENTRY_DSN", None)
    return env


def compatible_settings(
    directory: Path,
    redis_port: int,
    relay: dict[str, Any],
    destinations: dict[str, dict[str, Any]],
) -> tuple[Settings, dict[str, str], list[str]]:
    """Write the configuration, leaving out keys this engine refuses; return the settings, the
    environment of the relay's processes and a note per key left out."""
    relay, destinations = dict(relay), {name: dict(table) for name, table in destinations.items()}
    dropped: list[str] = []
    config = directory / "relay.toml"
    for _ in range(20):
        write_config(config, relay, destinations)
        env = relay_env(redis_port, config)
        try:
            return load_settings(env), env, dropped
        except ConfigurationError as exc:
            problems = _PROBLEM.findall(str(exc))
            removed = False
            for where, key, message in problems:
                table = relay if where == "relay" else destinations.get(where.split(".", 1)[1])
                if table is not None and key in table and key not in REQUIRED_KEYS:
                    del table[key]
                    dropped.append(f"{where}.{key} left out: {message.strip()}")
                    removed = True
            if not removed:
                raise
    raise ConfigurationError("the chaos configuration does not load even without its optional keys")


def destination_table(vendor: str, base_url: str, **overrides: Any) -> dict[str, Any]:
    """A destination of ``vendor`` at its sandbox mounted at ``base_url``, wired as the sandbox
    says (its base path and the keys it needs, :mod:`conversion_relay.sandbox`)."""
    stand_in = sandbox_classes()[vendor]
    table: dict[str, Any] = {"vendor": vendor, "base_url": base_url + stand_in.base_path, "api_key_env": KEY_ENV}
    table.update(stand_in.destination_options)
    table.update(overrides)
    return table
