"""Local, controllable stand-ins for vendor HTTP APIs, served over loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.faults import Faults
from sandbox.gravity_capi import GravityCapiSandbox
from sandbox.server import SandboxServer, VendorSandbox

VENDOR_SANDBOXES: dict[str, Callable[[], Any]] = {"gravity-capi": GravityCapiSandbox}

__all__ = ["Faults", "GravityCapiSandbox", "SandboxServer", "VENDOR_SANDBOXES", "VendorSandbox"]
