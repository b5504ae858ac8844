"""Vendor adapters, found by module: each vendor's module here defines one adapter (``base``,
``batching`` and ``destination`` are what every adapter shares).

Adding a vendor means adding a module here (and its schema, sandbox and tests); nothing else
lists vendors.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING

from conversion_relay.vendors.base import Part, Request, VendorAdapter

if TYPE_CHECKING:
    from conversion_relay.vendors.destination import DestinationSettings

__all__ = ["Part", "Request", "VendorAdapter", "adapter_classes", "adapter_for"]


@functools.cache
def adapter_classes() -> dict[str, type[VendorAdapter]]:
    """Every adapter class, keyed by its ``vendor`` name."""
    found: dict[str, type[VendorAdapter]] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base":
            continue
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, VendorAdapter) and value.vendor:
                found[value.vendor] = value
    return found


def adapter_for(destination: DestinationSettings) -> VendorAdapter:
    return adapter_classes()[destination.vendor](destination)
