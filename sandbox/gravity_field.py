"""Local stand-in for the Gravity Field Server-Side API (gravityfield.ai SSAPI).

Requests to `POST /ssapi/event` and `POST /ssapi/page` are judged against the
vendor's own OpenAPI document (extracted once into
`schemas/data/gravity_field_openapi.json`) by an independent schema checker,
plus the rules the vendor states only in prose: a predefined `eventType` must
satisfy that event's schema, `filter-items-v1` takes exactly one filter value,
`sortOrder` is ASC or DESC, `event_time` is an ISO date-time with an offset and
`events` holds one or more events. `slid`/`sl` may be null, as the vendor tells
new users to send them. Malformed JSON is a 422 like any other validation
error, since the document lists no 400.

The 500 requests/second limit is per API key (one key per section) over a
sliding one-second window and counts every authenticated request, refused ones
included. There are no per-event results, so `event_error_prefix` is refused.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sandbox.base import Response, SandboxBase, header, json_response, list_length, positive_int_or_none
from sandbox.schema_check import SchemaChecker

EVENT_PATH = "/ssapi/event"
PAGE_PATH = "/ssapi/page"
DEFAULT_RATE_LIMIT_PER_SECOND = 500
RATE_WINDOW_SECONDS = 1.0
#: Predefined `properties.eventType` values and the component schema each must satisfy.
PREDEFINED_EVENTS = {
    "add-to-cart-v1": "addToCart",
    "purchase-v1": "purchase",
    "remove-from-cart-v1": "removeFromCart",
    "sync-cart-v1": "syncCart",
    "add-to-wishlist-v1": "addToWishList",
    "change-attribute-v1": "changeAttr",
    "filter-items-v1": "filterItems",
    "keyword-search-v1": "keywordSearch",
    "enter-promo-code-v1": "promocodeEntered",
    "sort-items-v1": "sortItems",
    "newsletter-subscription-v1": "newsletterSubscription",
    "signup-v1": "signUp",
    "login-v1": "login",
}
PAGE_SCHEMA = {
    "type": "object",
    "properties": {name: {"$ref": f"#/components/schemas/{name}"} for name in ("user", "session", "context")},
    "required": ["user", "session", "context"],
}
COUNTERS = ("events", "pages", "duplicate_purchases", "validation_errors", "rate_limited")
_NULLABLE_IDS = (("user", ("slid", "slid_server")), ("session", ("sl",)))


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The vendor's OpenAPI document, prose stripped; read once per process."""
    resource = importlib.resources.files("schemas").joinpath("data/gravity_field_openapi.json")
    return json.loads(resource.read_text(encoding="utf-8"))


def _problem(status: int, kind: str, message: str, extra: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"code": status, "message": message, "type": kind}, extra)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _without_null_ids(payload: dict[str, Any]) -> dict[str, Any]:
    """Drop null `slid`/`slid_server`/`sl`, which the vendor documents for new users."""
    cleaned = dict(payload)
    for section, keys in _NULLABLE_IDS:
        value = cleaned.get(section)
        if isinstance(value, dict):
            cleaned[section] = {k: v for k, v in value.items() if not (k in keys and v is None)}
    return cleaned


def _event_rules(event_type: str | None, props: dict[str, Any], path: str) -> str | None:
    """Rules the vendor states in prose only, which the schema cannot express."""
    if event_type == "filter-items-v1" and ("filterNumericValue" in props) == ("filterStringValue" in props):
        return f"{path}: exactly one of filterNumericValue or filterStringValue is required"
    if event_type == "sort-items-v1" and props.get("sortOrder") not in ("ASC", "DESC"):
        return f"{path}.sortOrder: must be ASC or DESC"
    stamp = props.get("event_time")
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            parsed = None
        if parsed is None or "T" not in stamp or parsed.tzinfo is None:
            return f"{path}.event_time: must be an ISO date-time with an offset, e.g. 2024-06-21T12:36:40.000+00:00"
    return None


def max_in_window(times: Iterable[float], seconds: float) -> int:
    """Most timestamps inside any half-open window (t - seconds, t]."""
    ordered = sorted(times)
    best = start = 0
    for end, stamp in enumerate(ordered):
        while ordered[start] <= stamp - seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


class GravityFieldSandbox(SandboxBase):
    """The vendor side of Gravity Field SSAPI, with a record of every event and page view."""

    settings_keys = frozenset({"rate_limit_per_second"})
    per_event_results = False

    def __init__(
        self,
        api_keys: Iterable[str] = frozenset({"sandbox-key"}),
        clock: Callable[[], float] = time.time,
        rate_limit_per_second: int | None = DEFAULT_RATE_LIMIT_PER_SECOND,
    ) -> None:
        super().__init__(clock)
        self.api_keys = frozenset(api_keys)
        self._default_rate_limit = positive_int_or_none("rate_limit_per_second", rate_limit_per_second)
        self.rate_limit_per_second = self._default_rate_limit
        document = openapi_document()
        self.checker = SchemaChecker(document)
        self._event_schema = document["paths"][EVENT_PATH]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
        self._windows: dict[str, deque[float]] = {}
        self._ids = 0
        self._transactions: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.pages: list[dict[str, Any]] = []
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def max_requests_in_window(self, seconds: float = RATE_WINDOW_SECONDS) -> int:
        """Most requests (of any outcome, all keys) that arrived within any window of `seconds`."""
        with self._lock:
            return max_in_window((record["at"] for record in self.requests), seconds)

    def _check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {name: positive_int_or_none(name, value) for name, value in settings.items()}

    def _reset_records(self) -> None:
        self.rate_limit_per_second = self._default_rate_limit
        self._windows.clear()
        self._ids = 0
        self._transactions.clear()
        self.events.clear()
        self.pages.clear()
        self.counters.update(dict.fromkeys(COUNTERS, 0))

    def _state(self, include_events: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counters": dict(self.counters),
            "events_stored": len(self.events),
            "pages_stored": len(self.pages),
            "rate_limit_per_second": self.rate_limit_per_second,
            "max_requests_in_window": max_in_window((r["at"] for r in self.requests), RATE_WINDOW_SECONDS),
        }
        if include_events:
            out["events"] = list(self.events)
            out["pages"] = list(self.pages)
        return out

    def _auth(self, headers: Any) -> tuple[str | None, str | None]:
        """Return (scheme attempted, accepted key): Bearer per the OpenAPI, Basic base64("key:") per the guide."""
        scheme, _, token = (header(headers, "Authorization") or "").strip().partition(" ")
        scheme, token = scheme.lower(), token.strip()
        if scheme == "bearer":
            return "bearer", token if token in self.api_keys else None
        if scheme == "basic":
            try:
                user, colon, password = base64.b64decode(token, validate=True).decode().partition(":")
            except ValueError:
                return "basic", None
            return "basic", user if colon and not password and user in self.api_keys else None
        return None, None

    def _auth_label(self, query: Mapping[str, str], headers: Any) -> str | None:
        return self._auth(headers)[0]

    def _count_events(self, body: bytes) -> int | None:
        return list_length(body, "events")

    def handle(self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes) -> Response:
        auth, key = self._auth(headers)
        event_count = None
        if path not in (EVENT_PATH, PAGE_PATH):
            response = _problem(404, "not_found", f"no such endpoint: {path}")
        elif method != "POST":
            response = _problem(405, "method_not_allowed", f"use POST for {path}", {"Allow": "POST"})
        elif key is None:
            message = "invalid API key" if auth else "missing API key: send 'Authorization: Bearer <section API key>'"
            response = _problem(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
        elif self._over_limit(key):
            limit = f"rate limit of {self.rate_limit_per_second} requests per second exceeded"
            response = _problem(429, "rate_limited", limit, {"Retry-After": "1"})
        elif path == EVENT_PATH:
            event_count = self._count_events(body)
            response = self._event(body)
        else:
            response = self._page(body)
        self._record(method, path, query, auth, event_count, len(body), response[0])
        return response

    def _over_limit(self, key: str) -> bool:
        with self._lock:
            now = self._clock()
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - RATE_WINDOW_SECONDS:
                window.popleft()
            window.append(now)
            limit = self.rate_limit_per_second
            over = limit is not None and len(window) > limit
            if over:
                self.counters["rate_limited"] += 1
        return over

    def _parse(self, body: bytes) -> tuple[Any, str | None]:
        try:
            return json.loads(body, parse_constant=_reject_constant), None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, f"body: malformed JSON ({exc})"

    def _schema_problem(self, payload: Any, schema: dict[str, Any]) -> str | None:
        return self.checker.check(_without_null_ids(payload) if isinstance(payload, dict) else payload, schema)

    def _invalid(self, message: str) -> Response:
        with self._lock:
            self.counters["validation_errors"] += 1
        return _problem(422, "validation_error", message)

    def _event(self, body: bytes) -> Response:
        """Each predefined event against its own schema first (clearest message), then the whole body."""
        payload, problem = self._parse(body)
        events = payload.get("events") if isinstance(payload, dict) else None
        for index, event in enumerate(events if problem is None and isinstance(events, list) else ()):
            problem = self._event_problem(event, f"events[{index}]") if isinstance(event, dict) else None
            if problem is not None:
                break
        problem = problem or self._schema_problem(payload, self._event_schema)
        if problem is None and not events:
            problem = "events: must contain at least one event"
        if problem is not None:
            return self._invalid(problem)
        user, session, context = payload["user"], payload["session"], payload["context"]
        with self._lock:
            for event in events:
                self.events.append({"user": user, "session": session, "context": context, "event": event})
                self.counters["events"] += 1
                props = event.get("properties") or {}
                if props.get("eventType") == "purchase-v1":
                    if props["uniqueTransactionId"] in self._transactions:
                        self.counters["duplicate_purchases"] += 1
                    self._transactions.add(props["uniqueTransactionId"])
            if user.get("slid"):
                return 204, {"Content-Type": "text/plain"}, b""
            return json_response(200, self._new_ids(user, session))

    def _event_problem(self, event: dict[str, Any], path: str) -> str | None:
        props = event.get("properties")
        if not isinstance(props, dict):
            return None
        event_type = props.get("eventType")
        if isinstance(event_type, str) and event_type in PREDEFINED_EVENTS:
            ref = {"$ref": f"#/components/schemas/{PREDEFINED_EVENTS[event_type]}"}
            problem = self.checker.check(event, ref, path)
            if problem is not None:
                return problem
        return _event_rules(event_type, props, f"{path}.properties")

    def _page(self, body: bytes) -> Response:
        payload, problem = self._parse(body)
        problem = problem or self._schema_problem(payload, PAGE_SCHEMA)
        if problem is not None:
            return self._invalid(problem)
        user, session = payload["user"], payload["session"]
        with self._lock:
            self.pages.append({"user": user, "session": session, "context": payload["context"]})
            self.counters["pages"] += 1
            return json_response(200, self._new_ids(user, session))

    def _new_ids(self, user: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
        """New ids for the user and session the request did not identify; the caller holds the lock."""
        slid = sl = None
        if not user.get("slid"):
            self._ids += 1
            slid = f"sandbox-slid-{self._ids}"
        if not session.get("sl"):
            self._ids += 1
            sl = f"sandbox-sl-{self._ids}"
        return {"user": {"slid": slid}, "session": {"sl": sl}}
