"""Local, controllable stand-ins for vendor HTTP APIs, served over loopback.

Sandboxes are found by module, as adapters are (:mod:`conversion_relay.vendors`): every module
here that defines a :class:`SandboxBase` subclass with a ``vendor`` registers it, with its mount
prefix and the destination wiring the built-in configuration needs.  The class names exported
below are a convenience for tests; the registry does not depend on them.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from conversion_relay.sandbox.base import SandboxBase
from conversion_relay.sandbox.faults import Faults
from conversion_relay.sandbox.gravity_capi import GravityCapiSandbox
from conversion_relay.sandbox.gravity_field import GravityFieldSandbox
from conversion_relay.sandbox.gravity_reco import GravityRecoSandbox
from conversion_relay.sandbox.server import SandboxServer, VendorSandbox
from conversion_relay.sandbox.tracify import TracifySandbox


@functools.cache
def sandbox_classes() -> dict[str, type[SandboxBase]]:
    """Every vendor sandbox class, keyed by the adapter ``vendor`` it stands in for."""
    found: dict[str, type[SandboxBase]] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "__main__":
            continue
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, SandboxBase) and value.vendor:
                if value.vendor in found and found[value.vendor] is not value:
                    raise TypeError(
                        f"{value.__module__}.{value.__qualname__}: vendor {value.vendor!r} already has the sandbox "
                        f"{found[value.vendor].__qualname__}; give each vendor one sandbox class"
                    )
                found[value.vendor] = value
    return found


def mounted_sandboxes() -> dict[str, SandboxBase]:
    """A fresh sandbox of every vendor, keyed by its mount prefix: what :class:`SandboxServer`
    serves for the demo, the tests and ``conversion-relay sandbox``."""
    return {cls.mount_prefix: cls() for cls in sandbox_classes().values()}


#: Mount prefix -> sandbox class, with its default credentials (API key "sandbox-key"; RECO
#: user "sandbox", password "sandbox-key").  Built from :func:`sandbox_classes`.
VENDOR_SANDBOXES: dict[str, type[SandboxBase]] = {cls.mount_prefix: cls for cls in sandbox_classes().values()}

__all__ = [
    "Faults",
    "GravityCapiSandbox",
    "GravityFieldSandbox",
    "GravityRecoSandbox",
    "SandboxBase",
    "SandboxServer",
    "TracifySandbox",
    "VENDOR_SANDBOXES",
    "VendorSandbox",
    "mounted_sandboxes",
    "sandbox_classes",
]
