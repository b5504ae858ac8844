"""Django: one relay per process from Django's settings, and ``enqueue_on_commit``.

An event enqueued inside a transaction that then rolls back is a conversion for an order that
does not exist: the vendor counts it, and nothing can take it back.  ``enqueue_on_commit``
checks the events at once (a bad event raises where it is enqueued, inside the view) and stores
them in ``transaction.on_commit``, so a rolled-back transaction stores nothing.

Settings (``settings.py``); each key falls back to its environment variable::

    CONVERSION_RELAY = {
        "CONFIG": BASE_DIR / "relay.toml",   # or "sandbox"; else CONVERSION_RELAY_CONFIG
        "REDIS_URL": "redis://127.0.0.1:6379/0",  # else REDIS_URL
    }
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.db import transaction

from conversion_relay.client.producer import Relay
from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.config.source import CONFIG_ENV
from conversion_relay.errors import ConfigurationError, RelayError
from conversion_relay.testing import RecordingRelay, installed

#: The Django setting that holds the relay's options.
SETTING = "CONVERSION_RELAY"
#: Its keys, and the environment variable each falls back to.
OPTIONS = {"CONFIG": CONFIG_ENV, "REDIS_URL": "REDIS_URL"}

_lock = threading.Lock()
_relay: Relay | None = None


def relay_settings() -> Settings:
    """The relay's settings: ``settings.CONVERSION_RELAY``, then the environment.

    Raises:
        ConfigurationError: the setting is not a dict, has an unknown key, or the relay's
            configuration is bad (naming each bad key).
    """
    options = getattr(django_settings, SETTING, None) or {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"settings.{SETTING} must be a dict with the keys {', '.join(OPTIONS)}.")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"settings.{SETTING}: unknown key {', '.join(map(str, unknown))}; it takes {', '.join(OPTIONS)}."
        )
    env = dict(os.environ)
    env.update({OPTIONS[key]: str(value) for key, value in options.items() if value})
    return load_settings(env)


def get_relay() -> Relay | RecordingRelay:
    """The process's relay, built on first use from :func:`relay_settings`; while a test has a
    :class:`~conversion_relay.testing.RecordingRelay` installed, that recorder."""
    global _relay
    recorder = installed()
    if recorder is not None:
        return recorder
    with _lock:
        if _relay is None:
            _relay = Relay(relay_settings())
        return _relay


def reset_relay() -> None:
    """Close the process's relay; the next :func:`get_relay` builds a new one (done by itself
    when a test changes ``settings.CONVERSION_RELAY`` with ``override_settings``)."""
    global _relay
    with _lock:
        relay, _relay = _relay, None
    if relay is not None:
        relay.close()


def enqueue_on_commit(
    events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    destinations: Sequence[str] | None = None,
    using: str | None = None,
    robust: bool = False,
) -> list[str]:
    """Check the events now and store them when the transaction of ``using`` commits.

    Outside a transaction (autocommit) they are stored at once, as Django runs ``on_commit``
    callbacks then.  Only the hashed events wait for the commit, never the plaintext.

    Args:
        events, destinations: as for ``Relay.enqueue``.
        using: the database alias whose transaction counts; the default database when None.
        robust: passed to ``transaction.on_commit``: a failure to store is logged by Django and
            the other callbacks run, instead of the error leaving the ``atomic`` block.

    Returns:
        The ``event_id`` of each event, in order (generated where the event had none).

    Raises:
        EventValidationError: at once, as ``Relay.enqueue`` does; nothing will be stored.
        BacklogFullError, EnqueueError: when the transaction commits (the data is committed by
            then; the error carries ``event_ids`` for a retry), unless ``robust``.
    """
    relay = get_relay()
    try:
        call = relay.prepare(events, destinations=destinations)
    except RelayError as exc:
        error = exc
    else:
        transaction.on_commit(lambda: relay.store(call), using=using, robust=robust)
        return list(call.ids)
    del events  # no plaintext in this frame either (see conversion_relay.client.prepare.without_plaintext)
    raise error


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        reset_relay()


setting_changed.connect(_settings_changed)
