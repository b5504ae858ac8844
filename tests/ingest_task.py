"""The ``relay.enqueue`` task's own code, run in the test process against a test stack.

A worker runs the task on what kombu decoded from a JSON message; :func:`run_enqueue_task` does
the same in this process (kombu's JSON codec, then Celery's ``apply``), so a property test can
send it thousands of payloads without a broker round trip each.  The real-worker path is
tested as well, with fewer payloads (tests/test_enqueue_fuzz.py).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from kombu.utils import json as kombu_json

from tests.conftest import KEY_ENV


def ingest_for(stack: Any, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``conversion_relay.tasks.ingest`` whose producer is the stack's relay."""
    for key in ("REDIS_URL", "CONVERSION_RELAY_CONFIG", "CONVERSION_RELAY_BROKER_URL", KEY_ENV):
        monkeypatch.setenv(key, stack.env[key])
    module = importlib.import_module("conversion_relay.tasks.ingest")
    monkeypatch.setattr(module, "_relay", stack.relay)
    return module


def run_enqueue_task(module: ModuleType, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The task's result for a message carrying ``args`` and ``kwargs``, as a worker decodes it."""
    decoded_args, decoded_kwargs = kombu_json.loads(kombu_json.dumps([list(args), kwargs]))
    return module.enqueue.apply(args=decoded_args, kwargs=decoded_kwargs).get(propagate=True)
