"""The pytest plugin of :mod:`conversion_relay.testing`, registered by the ``pytest11`` entry point.

Fixtures:
    conversion_relay_settings: the settings the recorder checks against; the built-in sandbox
        configuration.  Override it in a ``conftest.py`` with your own file::

            @pytest.fixture
            def conversion_relay_settings():
                return conversion_relay.testing.recording_settings("deploy/relay.toml")

    conversion_relay_recorder: a fresh :class:`~conversion_relay.testing.RecordingRelay`, installed
        for the test (the Django and Flask integrations hand it out instead of their relay).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conversion_relay.config.settings import Settings
from conversion_relay.testing import RecordingRelay, recording_settings


@pytest.fixture
def conversion_relay_settings() -> Settings:
    return recording_settings()


@pytest.fixture
def conversion_relay_recorder(conversion_relay_settings: Settings) -> Iterator[RecordingRelay]:
    recorder = RecordingRelay(conversion_relay_settings)
    with recorder.install():
        yield recorder
