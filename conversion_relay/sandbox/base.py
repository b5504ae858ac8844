"""Bookkeeping shared by every vendor sandbox.

Each sandbox keeps the same request log, in-flight count, fault controls and
control surface (`configure`, `state`, `reset`) so the relay's tests, the demo
and the benchmark drive every vendor the same way. Subclasses add only the
vendor's own rules and records, through the small hooks below.

A subclass that sets `vendor` is registered (`conversion_relay.sandbox.sandbox_classes`): it
also says where it is mounted and what the built-in configuration needs to reach it, so that
nothing outside this package lists vendors or their sandbox wiring.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import orjson

from conversion_relay.sandbox.faults import Faults

Response = tuple[int, dict[str, str], bytes]


def json_response(status: int, payload: Any, extra: Mapping[str, str] | None = None) -> Response:
    """A compact JSON reply, as the vendors send them."""
    headers = {"Content-Type": "application/json"}
    if extra:
        headers.update(extra)
    return status, headers, json.dumps(payload, separators=(",", ":")).encode()


def header(headers: Any, name: str) -> str | None:
    """Case-insensitive lookup that works for http.client messages and plain dicts."""
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def list_length(body: bytes, key: str) -> int | None:
    """Length of the list under `key` in a JSON object body, or None when there is none."""
    try:
        value = orjson.loads(body).get(key)
    except (ValueError, AttributeError):
        return None
    return len(value) if isinstance(value, list) else None


def positive_int_or_none(name: str, value: Any) -> int | None:
    """Check a limit setting where null means "no limit"."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}: must be a positive integer, or null for no limit")
    return value


class SandboxBase:
    """Request log, in-flight count, faults and control surface common to all vendor sandboxes.

    Subclasses implement `handle`, `_auth_label`, `count_events` and `accepting_response`, and
    may override the other hooks. Records that the subclass keeps must be guarded by `_lock`.
    """

    #: The adapter ``vendor`` this sandbox stands in for; a class without one is not registered.
    vendor: ClassVar[str] = ""
    #: Where the bundled sandbox server mounts it: ``/<mount_prefix>/...``.
    mount_prefix: ClassVar[str] = ""
    #: The path under the mount that plays the destination's ``base_url``.
    base_path: ClassVar[str] = ""
    #: Destination keys besides ``base_url`` that the built-in configuration needs to reach it
    #: (credentials this sandbox accepts, ids it checks).
    destination_options: ClassVar[Mapping[str, Any]] = {}

    #: Largest accepted body in bytes; the server answers 413 above it. None = no limit.
    max_body_bytes: int | None = None
    #: Vendor settings that `configure` accepts besides the fault keys.
    settings_keys: frozenset[str] = frozenset()
    #: Vendors without per-event results cannot honour `event_error_prefix`.
    per_event_results: bool = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.faults = Faults()
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self.requests: list[dict[str, Any]] = []

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def configure(self, **kw: Any) -> None:
        """Fault settings plus the vendor's own settings; nothing changes unless all are valid."""
        own = {key: kw.pop(key) for key in list(kw) if key in self.settings_keys}
        if not self.per_event_results and kw.get("event_error_prefix") is not None:
            raise ValueError("event_error_prefix: not supported, this vendor has no per-event results")
        updates = self._check_settings(own)
        self.faults.configure(**kw)
        with self._lock:
            for name, value in updates.items():
                setattr(self, name, value)

    def reset(self) -> None:
        """Forget every request and record and restore the default settings and faults."""
        with self._lock:
            self.requests.clear()
            self._reset_records()
        self.faults.reset()

    def state(self, include_events: bool = True, include_requests: bool = True) -> dict[str, Any]:
        """A JSON-ready snapshot for the control endpoint and for tests."""
        with self._lock:
            out: dict[str, Any] = {"in_flight": self._in_flight, "request_count": len(self.requests)}
            out.update(self._state(include_events))
            if include_requests:
                out["requests"] = [dict(record) for record in self.requests]
        out["faults"] = self.faults.snapshot()
        return out

    def record_fault(
        self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes, status: int | None
    ) -> None:
        """Log a request the fault model answered (status None = dropped connection)."""
        auth = self._auth_label(query, headers)
        self._record(method, path, query, auth, self.count_events(path, body), len(body), status)

    def payload_too_large(
        self, method: str, path: str, query: Mapping[str, str], headers: Any, length: int
    ) -> Response:
        """Log and answer a body the server refused to read because it exceeds `max_body_bytes`."""
        self._record(method, path, query, self._auth_label(query, headers), None, length, 413)
        return self._too_large_response(length)

    def _record(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        auth: str | None,
        event_count: int | None,
        nbytes: int,
        status: int | None,
    ) -> None:
        record = {
            "method": method,
            "path": path,
            "query_keys": sorted(query),
            "auth": auth,
            "event_count": event_count,
            "bytes": nbytes,
            "status": status,
            **self._route_fields(path, query),
        }
        with self._lock:
            record["at"] = self._clock()
            self.requests.append(record)

    def _auth_label(self, query: Mapping[str, str], headers: Any) -> str | None:
        """Which auth route the request attempted, for the request log."""
        raise NotImplementedError

    def count_events(self, path: str, body: bytes) -> int | None:
        """Number of vendor events in a request body sent to ``path`` (under the mount), or None
        when it cannot be told.  The request log and the benchmark's sink count with it."""
        raise NotImplementedError

    def accepting_response(self, path: str, count: int) -> Response:
        """The vendor's answer accepting all ``count`` events of a request to ``path``, without
        checking or storing anything: what the benchmark's sink sends, so that it answers like
        the vendor at almost no cost."""
        raise NotImplementedError

    def demo_faults(self, refused_prefix: str, opted_out_user_ids: Sequence[str]) -> dict[str, Any]:
        """`configure` settings with which the demo shows how the relay handles this vendor's
        failures.  ``refused_prefix`` starts the ids of events the demo wants refused one by
        one and ``opted_out_user_ids`` names users it wants opted out; a vendor takes what it
        can express.  Default: one outage answer, retried."""
        return {"statuses": [503]}

    def _route_fields(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        """Extra request-log fields derived from the URL."""
        return {}

    def _too_large_response(self, length: int) -> Response:
        message = f"body: request body is {length} bytes; the limit is {self.max_body_bytes} bytes"
        return json_response(413, {"error": message})

    def _check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Validate vendor settings and return the attributes to set."""
        return settings

    def _reset_records(self) -> None:
        """Clear vendor records and settings; the caller holds `_lock`."""

    def _state(self, include_events: bool) -> dict[str, Any]:
        """Vendor part of `state()`; the caller holds `_lock`."""
        return {}
