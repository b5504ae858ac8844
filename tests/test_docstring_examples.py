"""The examples in docstrings run: a reader copies them, so a stale one is a bug.

Every module with an example is run with :mod:`doctest`, except those whose examples talk to a
Redis the reader has (a producer's ``Relay()``); those are shown working by the producer tests.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "conversion_relay"
#: Modules whose examples need the reader's Redis, and so are not run here.
NEEDS_REDIS = {"conversion_relay", "conversion_relay.client.aio", "conversion_relay.client.producer"}


def modules_with_examples() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>> " not in path.read_text():
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


MODULES = modules_with_examples()


def test_examples_are_found():
    assert NEEDS_REDIS <= set(MODULES), "drop modules from NEEDS_REDIS that no longer have examples"
    assert len(set(MODULES) - NEEDS_REDIS) >= 5


@pytest.mark.parametrize("name", sorted(set(MODULES) - NEEDS_REDIS))
def test_the_examples_of_a_module_run(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name}: an example that doctest does not see (a '>>> ' in plain text?)"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples fail (run python -m doctest)"
