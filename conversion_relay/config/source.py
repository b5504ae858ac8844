"""Which configuration is in effect: the file named by ``CONVERSION_RELAY_CONFIG``, or the
built-in sandbox configuration when that variable says ``sandbox``.

There is no default.  A relay that found no file used to fall back on the sandbox
configuration, with the production key prefix and destination names: a worker or producer
started without its file then wrote into production data under the wrong settings.  Now the
sandbox must be asked for by name, and it keeps its data under a key prefix of its own.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from conversion_relay.errors import ConfigurationError
from conversion_relay.sandbox import sandbox_classes
from conversion_relay.vendors import adapter_classes

#: Environment variable naming the TOML configuration file.
CONFIG_ENV = "CONVERSION_RELAY_CONFIG"
#: The reserved value of ``CONVERSION_RELAY_CONFIG`` that asks for the built-in configuration.
SANDBOX_CONFIG = "sandbox"
#: Key prefix of the built-in configuration: never the production default ``cr``.
SANDBOX_KEY_PREFIX = "cr-sandbox"
#: Where the built-in configuration expects the vendor sandbox.
SANDBOX_URL_ENV = "CONVERSION_RELAY_SANDBOX_URL"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
#: API key the sandboxes accept; every destination of the built-in configuration uses it.
SANDBOX_API_KEY = "sandbox-key"
#: How reports name the built-in configuration.
SANDBOX_DESCRIPTION = "built-in sandbox configuration"


def describe_source(env: Mapping[str, str]) -> str | None:
    """The configuration ``env`` names, for reports: the file's path, the built-in sandbox
    configuration, or None when ``CONVERSION_RELAY_CONFIG`` is not set."""
    path = env.get(CONFIG_ENV, "").strip()
    if path == SANDBOX_CONFIG:
        return SANDBOX_DESCRIPTION
    return path or None


def load_document(env: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
    """The parsed configuration named by ``CONVERSION_RELAY_CONFIG``, and whether it is the
    built-in sandbox configuration.  Unset is an error, never a default (see the module
    docstring); a file literally named ``sandbox`` is given as ``./sandbox``."""
    path = env.get(CONFIG_ENV, "").strip()
    if path == SANDBOX_CONFIG:
        return builtin_document(env), True
    if not path:
        raise ConfigurationError(
            f"{CONFIG_ENV} is not set; set it to the path of the TOML configuration file "
            f'(deploy/conversion-relay.example.toml lists every key), or to "{SANDBOX_CONFIG}" for the '
            "built-in configuration that sends everything to the local vendor sandbox."
        )
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh), False
    except FileNotFoundError:
        raise ConfigurationError(f"{CONFIG_ENV}: no file at {path!r}; fix the path.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc}).") from None


def builtin_document(env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration of ``CONVERSION_RELAY_CONFIG=sandbox``: every vendor at the local
    sandbox (``CONVERSION_RELAY_SANDBOX_URL``), under the key prefix ``cr-sandbox``.

    Where each vendor's sandbox is mounted and what it needs besides the base URL is the
    sandbox's to say (:mod:`conversion_relay.sandbox`), not the production adapter's."""
    sandbox = env.get(SANDBOX_URL_ENV, DEFAULT_SANDBOX_URL).rstrip("/")
    stand_ins = sandbox_classes()
    destinations = {}
    for vendor, adapter in adapter_classes().items():
        stand_in = stand_ins.get(vendor)
        if stand_in is None:
            raise ConfigurationError(
                f"{vendor}: no sandbox stands in for this vendor, so the built-in configuration cannot "
                "reach it; add its module to conversion_relay/sandbox/ (docs/design.md, Adding a vendor)."
            )
        destinations[adapter.default_destination_name] = {
            "vendor": vendor,
            "base_url": f"{sandbox}/{stand_in.mount_prefix}{stand_in.base_path}",
            **stand_in.destination_options,
        }
    return {"relay": {"key_prefix": SANDBOX_KEY_PREFIX}, "destinations": destinations}
