"""Local, controllable stand-ins for vendor HTTP APIs, served over loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.base import SandboxBase
from sandbox.faults import Faults
from sandbox.gravity_capi import GravityCapiSandbox
from sandbox.gravity_field import GravityFieldSandbox
from sandbox.gravity_reco import GravityRecoSandbox
from sandbox.server import SandboxServer, VendorSandbox
from sandbox.tracify import TracifySandbox

#: Mount prefix -> factory building the sandbox with its default credentials
#: (API key "sandbox-key"; RECO user "sandbox", password "sandbox-key").
VENDOR_SANDBOXES: dict[str, Callable[[], Any]] = {
    "gravity-capi": GravityCapiSandbox,
    "gravity-field": GravityFieldSandbox,
    "tracify": TracifySandbox,
    "gravity-reco": GravityRecoSandbox,
}

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
]
