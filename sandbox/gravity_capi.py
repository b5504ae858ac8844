"""Local stand-in for the Gravity Conversions API (trygravity.ai).

Implements the vendor's documented contract for `POST /gateway/events`
independently of the relay, so the relay's tests exercise its client code
against the vendor's rules rather than against the relay's own assumptions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sandbox.base import Response, SandboxBase, header, json_response, list_length

EVENTS_PATH = "/gateway/events"
MAX_EVENTS = 1000
MAX_BODY_BYTES = 1_000_000
DEDUP_WINDOW_SECONDS = 48 * 3600
EVENT_STATUSES = ("ok", "duplicate", "test_ok", "skipped", "error")
_LIST_FIELDS = ("em", "ph", "external_id")


def _error(status: int, message: str, extra: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, extra)


def _validate(event: Any) -> str | None:
    """Return the first problem with one event, phrased as '<field>: <problem>'."""
    if not isinstance(event, dict):
        return "event: must be a JSON object"
    name = event.get("event_name")
    if name is None:
        return "event_name: required"
    if not isinstance(name, str) or not name.strip():
        return "event_name: must be a non-empty string"
    event_time = event.get("event_time")
    if event_time is not None and (isinstance(event_time, bool) or not isinstance(event_time, int)):
        return "event_time: must be an integer (UNIX seconds)"
    event_id = event.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        return "event_id: must be a string"
    user_data = event.get("user_data")
    if user_data is None:
        return None
    if not isinstance(user_data, dict):
        return "user_data: must be an object"
    for key in _LIST_FIELDS:
        value = user_data.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(item, str) for item in value)):
            return f"user_data.{key}: must be a list of strings"
    return None


class GravityCapiSandbox(SandboxBase):
    """The vendor side of Gravity CAPI, with a record of everything it was sent."""

    max_body_bytes = MAX_BODY_BYTES
    settings_keys = frozenset({"opted_out_external_ids"})

    def __init__(
        self,
        api_keys: Iterable[str] = frozenset({"sandbox-key"}),
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.api_keys = frozenset(api_keys)
        self.opted_out_external_ids: frozenset[str] = frozenset()
        self._seen: dict[tuple[str, str], float] = {}
        self.events: list[dict[str, Any]] = []
        self.counters: dict[str, int] = dict.fromkeys(EVENT_STATUSES, 0)

    def _check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The vendor-side opt-out list is the only setting besides the faults."""
        if "opted_out_external_ids" not in settings:
            return {}
        ids = settings["opted_out_external_ids"] or []
        if not isinstance(ids, (list, tuple, set, frozenset)) or not all(isinstance(item, str) for item in ids):
            raise ValueError("opted_out_external_ids: must be a list of strings")
        return {"opted_out_external_ids": frozenset(ids)}

    def _reset_records(self) -> None:
        self._seen.clear()
        self.events.clear()
        self.counters.update(dict.fromkeys(EVENT_STATUSES, 0))
        self.opted_out_external_ids = frozenset()

    def _state(self, include_events: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counters": dict(self.counters),
            "events_stored": len(self.events),
            "opted_out_external_ids": sorted(self.opted_out_external_ids),
        }
        if include_events:
            out["events"] = list(self.events)
        return out

    def _auth(self, query: Mapping[str, str], headers: Any) -> tuple[str | None, bool]:
        """Return (method attempted, accepted); a valid key by either route is enough."""
        attempted = None
        authorization = header(headers, "Authorization")
        if authorization:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                attempted = "bearer"
                if token.strip() in self.api_keys:
                    return "bearer", True
        key = query.get("api_key")
        if key is not None:
            if key in self.api_keys:
                return "query", True
            attempted = attempted or "query"
        return attempted, False

    def _auth_label(self, query: Mapping[str, str], headers: Any) -> str | None:
        return self._auth(query, headers)[0]

    def _count_events(self, body: bytes) -> int | None:
        return list_length(body, "data")

    def _too_large_response(self, length: int) -> Response:
        return _error(413, f"body: request body is {length} bytes; the limit is {MAX_BODY_BYTES} bytes")

    def handle(self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes) -> Response:
        auth, accepted = self._auth(query, headers)
        event_count: int | None = None
        if path != EVENTS_PATH:
            response = _error(404, f"no such endpoint: {path}")
        elif method != "POST":
            response = _error(405, f"method {method} not allowed on {EVENTS_PATH}; use POST", {"Allow": "POST"})
        elif not accepted:
            message = (
                "invalid API key"
                if auth
                else ("missing API key: pass ?api_key=KEY or an 'Authorization: Bearer KEY' header")
            )
            response = _error(401, message, {"WWW-Authenticate": "Bearer"})
        else:
            response, event_count = self._events(body)
        self._record(method, path, query, auth, event_count, len(body), response[0])
        return response

    def _events(self, body: bytes) -> tuple[Response, int | None]:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body: malformed JSON ({exc})"), None
        if not isinstance(payload, dict):
            return _error(400, "body: must be a JSON object with a 'data' list"), None
        data = payload.get("data")
        if data is None:
            return _error(400, "data: required"), None
        if not isinstance(data, list):
            return _error(400, "data: must be a list of events"), None
        if not data:
            return _error(400, "data: must contain at least one event"), 0
        if len(data) > MAX_EVENTS:
            return _error(400, f"data: at most {MAX_EVENTS} events per request, got {len(data)}"), len(data)
        test_code = payload.get("test_event_code")
        if test_code is not None and not isinstance(test_code, str):
            return _error(400, "test_event_code: must be a string"), len(data)
        results = self._process(data, bool(test_code))
        errored = sum(1 for result in results if result["status"] == "error")
        return json_response(
            200,
            {
                "events_received": len(data),
                "events_processed": len(data) - errored,
                "events_errored": errored,
                "results": results,
                "test_mode": bool(test_code),
            },
        ), len(data)

    def _process(self, data: list[Any], test_mode: bool) -> list[dict[str, Any]]:
        error_prefix = self.faults.event_error_prefix
        opted_out = self.opted_out_external_ids
        checked = []
        for event in data:
            problem = _validate(event)
            event_id = event.get("event_id") if isinstance(event, dict) else None
            if problem is None and error_prefix and event_id and event_id.startswith(error_prefix):
                problem = f"event_id: sandbox injected error for events prefixed {error_prefix!r}"
            checked.append((event, event_id, problem))
        results = []
        with self._lock:
            now = self._clock()
            for event, event_id, problem in checked:
                user_data = event.get("user_data") if problem is None else None
                user_data = user_data if isinstance(user_data, dict) else {}
                grclid = user_data.get("grclid")
                if problem is not None:
                    status = "error"
                elif test_mode:
                    status = "test_ok"
                elif opted_out and opted_out.intersection(user_data.get("external_id") or ()):
                    status = "skipped"
                else:
                    status = self._store(event, event_id, now)
                result: dict[str, Any] = {
                    "event_id": event_id if isinstance(event_id, str) else None,
                    "status": status,
                    "attributed": isinstance(grclid, str) and grclid != "",
                }
                if problem is not None:
                    result["error"] = problem
                self.counters[status] += 1
                results.append(result)
        return results

    def _store(self, event: dict[str, Any], event_id: str | None, now: float) -> str:
        """Dedup and store one valid event; caller holds the lock."""
        if event_id:
            key = (event_id, event["event_name"])
            seen_at = self._seen.get(key)
            if seen_at is not None and now - seen_at < DEDUP_WINDOW_SECONDS:
                return "duplicate"
            self._seen[key] = now
        self.events.append(event)
        return "ok"
