"""Local stand-in for the Gravity Field Server-Side API (gravityfield.ai SSAPI).

Each rule is labelled with where it comes from: *documented* (the vendor says
so: OpenAPI seed 003, the English guide seed 001, or a section of
vendor-contracts.md) or *assumed* (the vendor says nothing; the sandbox picks a
behaviour so the relay can be tested against one).  docs/vendors/gravity_field.md
lists the same rules in a table.

- Documented (OpenAPI seed 003): bodies of `POST /ssapi/event` and
  `POST /ssapi/page` are judged against the vendor's own document (extracted
  into `conversion_relay/schemas/data/gravity_field_openapi.json`) by an independent checker;
  401 without a valid Bearer key; 422 `{code, message, type}`; 200 with new ids
  or 204.
- Documented in the OpenAPI's prose (seed 003): `filter-items-v1` takes exactly
  one filter value, `sortOrder` is ASC or DESC, `event_time` is an ISO
  date-time with an offset, `events` holds one or more events.
- Documented (hybrid-mode guide, vendor-contracts 4.6): `slid`/`sl` may be null.
- Documented (seed 001): 500 requests per second per section (per API key).
- Assumed: a predefined `eventType` must satisfy that event's schema (the
  document's `anyOf` ends in `customEvent`, which takes anything); Basic auth
  encodes `key:` (seed 001 says Basic without saying what); malformed JSON is a
  422 (the document lists no 400); 204 when the user has a `slid`, 200 with new
  ids otherwise; the rate window slides over one second, counts refused
  requests too, and a request above it gets 429 with `Retry-After: 1` (the
  vendor documents no answer above the limit).

There are no per-event results (documented: no per-event field in seed 003),
so `event_error_prefix` is refused.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from conversion_relay.sandbox.base import (
    Response,
    SandboxBase,
    header,
    json_response,
    list_length,
    positive_int_or_none,
)
from conversion_relay.sandbox.schema_check import SchemaChecker

EVENT_PATH = "/ssapi/event"
PAGE_PATH = "/ssapi/page"
#: Documented (seed 001): "500 requests per second (RPS) per section".
DEFAULT_RATE_LIMIT_PER_SECOND = 500
#: Assumed: the vendor does not say how the second is counted; a sliding window is the strictest.
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
    resource = importlib.resources.files("conversion_relay.schemas").joinpath("data/gravity_field_openapi.json")
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
    """Rules the vendor states in prose only, which the schema cannot express (documented:
    the OpenAPI descriptions of filterItems, sortItems and event_time, seed 003)."""
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

    vendor = "gravity_field"
    mount_prefix = "gravity-field"
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

    def count_events(self, path: str, body: bytes) -> int | None:
        """The events of an event call; a page call is one page view."""
        if path.endswith(PAGE_PATH):
            return 1
        return list_length(body, "events")

    def accepting_response(self, path: str, count: int) -> Response:
        """A page view gets ids (none new), an event call the 204 of a known user."""
        if path.endswith(PAGE_PATH):
            return json_response(200, {"user": {"slid": None}, "session": {"sl": None}})
        return 204, {"Content-Type": "text/plain"}, b""

    def demo_faults(self, refused_prefix: str, opted_out_user_ids: Sequence[str]) -> dict[str, Any]:
        """A gateway error and a rate limit with ``Retry-After``."""
        return {"statuses": [502, {"status": 429, "retry_after": "1"}]}

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
        elif self._over_limit(key):  # assumed answer: 429 + Retry-After (the vendor documents none)
            limit = f"rate limit of {self.rate_limit_per_second} requests per second exceeded"
            response = _problem(429, "rate_limited", limit, {"Retry-After": "1"})
        elif path == EVENT_PATH:
            event_count = self.count_events(path, body)
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
        """Each predefined event against its own schema first (clearest message; assumed rule),
        then the whole body (documented: OpenAPI seed 003)."""
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
            if user.get("slid"):  # assumed: when the vendor answers 204 rather than 200 is not documented
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
