"""Flask: the ``ConversionRelay`` extension, for apps built directly or by an app factory.

::

    relay = ConversionRelay()            # module level, no app yet

    def create_app():
        app = Flask(__name__)
        app.config["CONVERSION_RELAY_CONFIG"] = "relay.toml"   # else CONVERSION_RELAY_CONFIG
        app.config["REDIS_URL"] = "redis://127.0.0.1:6379/0"   # else REDIS_URL
        relay.init_app(app)
        return app

    relay.relay.enqueue(event)           # in a request: the current app's relay

Each app gets one :class:`~conversion_relay.Relay`, built (and its configuration checked) in
``init_app``, so a bad configuration stops the app at start-up, not at its first order.
"""

from __future__ import annotations

import os

from flask import Flask, current_app, has_app_context

from conversion_relay.client.producer import Relay
from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.config.source import CONFIG_ENV
from conversion_relay.testing import RecordingRelay, installed

#: Where ``init_app`` keeps the app's relay: ``app.extensions["conversion_relay"]``.
EXTENSION = "conversion_relay"
#: The app's config keys, and the environment variable each falls back to.
CONFIG_KEYS = {"CONVERSION_RELAY_CONFIG": CONFIG_ENV, "REDIS_URL": "REDIS_URL"}


def relay_settings(app: Flask) -> Settings:
    """The relay's settings from ``app.config``, then the environment.

    Raises:
        ConfigurationError: naming each bad key of the relay's configuration.
    """
    env = dict(os.environ)
    env.update({variable: str(app.config[key]) for key, variable in CONFIG_KEYS.items() if app.config.get(key)})
    return load_settings(env)


class ConversionRelay:
    """The Flask extension: ``init_app`` builds the app's relay, :attr:`relay` hands it out."""

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build ``app``'s relay from its config.

        Raises:
            ConfigurationError: the relay's configuration is bad; the app should not start.
        """
        app.extensions[EXTENSION] = Relay(relay_settings(app))

    @property
    def relay(self) -> Relay | RecordingRelay:
        """The current app's relay (or the app given to the constructor outside an app
        context); while a test has a :class:`~conversion_relay.testing.RecordingRelay`
        installed, that recorder."""
        recorder = installed()
        if recorder is not None:
            return recorder
        app = current_app if has_app_context() else self.app
        if app is None:
            raise RuntimeError("No Flask app: use ConversionRelay.relay inside an app context, or pass the app.")
        try:
            return app.extensions[EXTENSION]
        except KeyError:
            raise RuntimeError("ConversionRelay.init_app(app) was not called for this app.") from None
