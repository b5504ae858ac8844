"""Fault injection shared by every vendor sandbox.

The relay's retry, back-off and circuit-breaking paths can only be tested
against a vendor that misbehaves on demand, so each sandbox owns a `Faults`
object that the server consults once per request before normal handling.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

CONFIG_KEYS = frozenset({"statuses", "latency_seconds", "drop_connections", "event_error_prefix", "fail_all_status"})


@dataclass(frozen=True)
class FaultAction:
    """What the server must do with one request, decided atomically."""

    kind: Literal["normal", "drop", "status"]
    latency_seconds: float = 0.0
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class _Scripted:
    status: int
    headers: dict[str, str]
    body: bytes

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if "Retry-After" in self.headers:
            out["retry_after"] = self.headers["Retry-After"]
        return out


def _check_status(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"{key}: must be an HTTP status code between 100 and 599, got {value!r}")
    return value


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _scripted(item: Any) -> _Scripted:
    """Normalise one `statuses` entry so bad scripts fail at configure time, not mid-test."""
    if not isinstance(item, dict):
        status = _check_status(item, "statuses[]")
        return _Scripted(status, {"Content-Type": "application/json"}, _error_body(f"sandbox: injected HTTP {status}"))
    unknown = set(item) - {"status", "retry_after", "body", "content_type"}
    if unknown:
        raise ValueError(f"statuses[]: unknown keys {sorted(unknown)}")
    status = _check_status(item.get("status"), "statuses[].status")
    headers = {"Content-Type": str(item.get("content_type", "application/json"))}
    if item.get("retry_after") is not None:
        headers["Retry-After"] = str(item["retry_after"])
    body = item.get("body")
    if body is None:
        raw = _error_body(f"sandbox: injected HTTP {status}")
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
    return _Scripted(status, headers, raw)


class Faults:
    """Thread-safe, scriptable misbehaviour for one vendor sandbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[_Scripted] = deque()
        self._latency = 0.0
        self._drops = 0
        self._event_error_prefix: str | None = None
        self._fail_all_status: int | None = None

    def configure(self, **kw: Any) -> None:
        """Change only the given settings; validate everything before applying anything."""
        unknown = set(kw) - CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        updates: dict[str, Any] = {}
        if "statuses" in kw:
            statuses = kw["statuses"] or []
            if not isinstance(statuses, list):
                raise ValueError("statuses: must be a list of status codes or objects")
            updates["_script"] = deque(_scripted(item) for item in statuses)
        if "latency_seconds" in kw:
            latency = kw["latency_seconds"] or 0.0
            if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
                raise ValueError("latency_seconds: must be a non-negative number")
            updates["_latency"] = float(latency)
        if "drop_connections" in kw:
            drops = kw["drop_connections"] or 0
            if isinstance(drops, bool) or not isinstance(drops, int) or drops < 0:
                raise ValueError("drop_connections: must be a non-negative integer")
            updates["_drops"] = drops
        if "event_error_prefix" in kw:
            prefix = kw["event_error_prefix"]
            if prefix is not None and (not isinstance(prefix, str) or not prefix):
                raise ValueError("event_error_prefix: must be a non-empty string or null")
            updates["_event_error_prefix"] = prefix
        if "fail_all_status" in kw:
            status = kw["fail_all_status"]
            updates["_fail_all_status"] = None if status is None else _check_status(status, "fail_all_status")
        with self._lock:
            for name, value in updates.items():
                setattr(self, name, value)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._latency = 0.0
            self._drops = 0
            self._event_error_prefix = None
            self._fail_all_status = None

    def next_action(self) -> FaultAction:
        """Consume at most one fault; drops win over scripts, scripts over an outage."""
        with self._lock:
            latency = self._latency
            if self._drops > 0:
                self._drops -= 1
                return FaultAction("drop", latency)
            if self._script:
                item = self._script.popleft()
                return FaultAction("status", latency, item.status, dict(item.headers), item.body)
            status = self._fail_all_status
        if status is not None:
            return FaultAction(
                "status",
                latency,
                status,
                {"Content-Type": "application/json"},
                _error_body(f"sandbox: simulated outage (fail_all_status={status})"),
            )
        return FaultAction("normal", latency)

    @property
    def latency_seconds(self) -> float:
        with self._lock:
            return self._latency

    @property
    def event_error_prefix(self) -> str | None:
        with self._lock:
            return self._event_error_prefix

    def snapshot(self) -> dict[str, Any]:
        """Current settings, with scripts and drop counts showing what is still pending."""
        with self._lock:
            return {
                "statuses": [item.describe() for item in self._script],
                "latency_seconds": self._latency,
                "drop_connections": self._drops,
                "event_error_prefix": self._event_error_prefix,
                "fail_all_status": self._fail_all_status,
            }
