"""Local stand-in for the Gravity Conversions API (trygravity.ai).

Implements the vendor's documented contract for `POST /gateway/events`
independently of the relay, so the relay's tests exercise its client code
against the vendor's rules rather than against the relay's own assumptions.

Each rule is labelled where it is coded: *documented* rules are what the vendor's page says
(seed 000, "Server-side conversions", docs.trygravity.ai); *assumed* rules are the sandbox's
own answer where that page is silent (status codes, messages, the byte limit), so a test that
leans on one is leaning on a guess.  docs/vendors/gravity_capi.md has the same list.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from conversion_relay.sandbox.base import Response, SandboxBase, header, json_response, list_length

#: Documented (seed 000): ``POST https://api.trygravity.ai/gateway/events``.
EVENTS_PATH = "/gateway/events"
#: Documented (seed 000): "Send up to 1,000 events per request".  The 400 for more is assumed.
MAX_EVENTS = 1000
#: Assumed: the page gives no byte limit; 1 MB and its 413 are the sandbox's guess.
MAX_BODY_BYTES = 1_000_000
#: Documented (seed 000): dedup by ``event_id`` + ``event_name`` within 48 hours.
DEDUP_WINDOW_SECONDS = 48 * 3600
#: Documented (seed 000): the per-event result statuses.
EVENT_STATUSES = ("ok", "duplicate", "test_ok", "skipped", "error")
#: Documented (seed 000): ``em``, ``ph`` and ``external_id`` are ``string[]``.
_LIST_FIELDS = ("em", "ph", "external_id")
#: Documented (seed 000): "currency  string  ISO 4217 currency code (default: USD)".
DEFAULT_CURRENCY = "USD"


def _error(status: int, message: str, extra: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, extra)


def _validate(event: Any) -> str | None:
    """Return the first problem with one event, phrased as '<field>: <problem>'.

    Documented: the field types (``event_time`` UNIX seconds, ``em``/``ph``/``external_id``
    lists of strings).  Assumed: that ``event_name`` is the one required field (the page marks
    none required, but names every event by it) and the wording of the problems."""
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

    vendor = "gravity_capi"
    mount_prefix = "gravity-capi"
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
        """Return (method attempted, accepted); a valid key by either route is enough.

        Documented: ``?api_key=`` or ``Authorization: Bearer``.  Assumed: 401 and its body."""
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

    def count_events(self, path: str, body: bytes) -> int | None:
        return list_length(body, "data")

    def accepting_response(self, path: str, count: int) -> Response:
        """Put together as bytes: the sink answers thousands of events a second with it."""
        results = b",".join([b'{"status":"ok","attributed":false}'] * count)
        body = b'{"events_received":%d,"events_processed":%d,"events_errored":0,"results":[%s],"test_mode":false}'
        return 200, {"Content-Type": "application/json"}, body % (count, count, results)

    def demo_faults(self, refused_prefix: str, opted_out_user_ids: Sequence[str]) -> dict[str, Any]:
        """Two outage answers and a rate limit; per-event refusals and opted-out users, which
        this vendor answers event by event."""
        return {
            "statuses": [503, 503, {"status": 429, "retry_after": "2"}],
            "event_error_prefix": refused_prefix,
            "opted_out_external_ids": list(opted_out_user_ids),
        }

    def _too_large_response(self, length: int) -> Response:
        """Assumed: the page states no byte limit; the 413 at :data:`MAX_BODY_BYTES` is a guess."""
        return _error(413, f"body: request body is {length} bytes; the limit is {MAX_BODY_BYTES} bytes")

    def handle(self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes) -> Response:
        """Documented: the path and POST.  Assumed: the 404 and 405 for anything else."""
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
        """Documented: the ``{"data": [...], "test_event_code"}`` body and the response shape
        (``events_received``, ``events_processed``, ``events_errored``, ``results``,
        ``test_mode``).  Assumed: every 400 and its message, and that ``data`` may not be empty."""
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
        """Documented: each event is judged alone ("partial failures don't reject the batch"),
        ``test_ok`` for a test code, ``skipped`` for an opted-out user, ``attributed`` when a
        click id came.  Assumed: opt-out keyed on ``external_id`` (the page does not say how)."""
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
        """Dedup and store one valid event as the vendor counts it; caller holds the lock.

        A value without a currency is stored in USD, the documented default: that is how the
        vendor reads it, so a test sees what an order in another currency would become."""
        if event_id:
            key = (event_id, event["event_name"])
            seen_at = self._seen.get(key)
            if seen_at is not None and now - seen_at < DEDUP_WINDOW_SECONDS:
                return "duplicate"
            self._seen[key] = now
        custom_data = event.get("custom_data")
        if isinstance(custom_data, dict) and "value" in custom_data and "currency" not in custom_data:
            event = {**event, "custom_data": {**custom_data, "currency": DEFAULT_CURRENCY}}
        self.events.append(event)
        return "ok"
