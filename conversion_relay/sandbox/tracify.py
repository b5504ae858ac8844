"""Local stand-in for Tracify's server-side events API (`POST /api/v1/events`).

Applies the rules of the tracify.dev page and the schema of the OpenAPI-built
SDK, independently of the relay: `url` (7+ characters), `customer_site_id`
(UUID), `identity_data` (64-hex keys, values 1-4, an IP hash 3 and a user-agent
hash 4 required), `datetime` (`YYYY-MM-DD HH:MM:SS`, required, as every vendor
example sends it), `type` and `data` with `origin`, and the money fields of
purchases and conversions. A conversion may carry `amount` (tracify.dev) or
`value` (SDK): the sources conflict, so both are accepted and the one used is
recorded per conversion id.

Tracify answers a whole batch with one `{"status": ..., "error": ...}` and has
no per-event results, so one invalid event refuses the whole request with a 400
naming the first problem; nothing of that request is stored. `order_id` and
`conversion_id` deduplicate with no window, first received wins; a repeat is
answered 200 but not stored. The vendor states no batch or size limit;
`max_events_per_request` (default none) turns on a 413 for tests.

Each rule is labelled in `RULES` with where it comes from: documented on the
vendor page (seed 002, tracify.dev/events), by a third party (the OpenAPI-built
SDK, see the project's vendor-contracts notes), or assumed by this sandbox.
docs/vendors/tracify.md lists the same labels.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from conversion_relay.sandbox.base import (
    Response,
    SandboxBase,
    header,
    json_response,
    list_length,
    positive_int_or_none,
)

#: Every rule this sandbox applies, and its source, so a test passing here is read for what it
#: proves: a documented rule is the vendor's, an assumed one only this sandbox's.
RULES: Mapping[str, str] = MappingProxyType(
    {
        "tracify-token header, raw key": "third party (SDK, GTM template; the vendor's plugin)",
        "url of at least 7 characters": "third party (SDK)",
        "customer_site_id a UUID": "documented (seed 002: CSID, UUID example); UUID format from the SDK",
        "identity_data keys 64 hex characters": "documented (seed 002 examples); lower case assumed",
        "identity_data values 1, 2, 3 or 4": "documented (seed 002)",
        "identity kinds 3 (IP) and 4 (user agent) required": "documented (seed 002)",
        "datetime required, %Y-%m-%d %H:%M:%S": "format documented (seed 002); required assumed (SDK: optional)",
        "type one of the five event types": "documented (seed 002)",
        "data.origin required": "documented (seed 002)",
        "purchase: order_id, currency, amount required": "documented (seed 002)",
        "conversion: conversion_id, currency, amount required": "documented (seed 002)",
        "conversion: value accepted for amount": "third party (SDK), conflicting with seed 002",
        "currency three upper-case letters": "3-letter ISO-4217 documented (seed 002); upper case assumed",
        "money a decimal string, . or ,": "documented (seed 002 examples: dot); comma from the vendor's plugin",
        "one invalid event refuses the whole request": "assumed (one status per request: SDK)",
        "order_id and conversion_id deduplicate, first wins": "documented (seed 002: unique for deduplication)",
        "413 above max_events_per_request": "assumed (a test control; no limit documented)",
        "answer {status, error}": "third party (SDK)",
    }
)
EVENTS_PATH = "/api/v1/events"
TOKEN_HEADER = "tracify-token"
EVENT_TYPES = ("pageview", "productview", "addtocart", "purchase", "conversion")
#: The identity_data values that must be present: 3 = hashed IP, 4 = hashed user agent.
REQUIRED_IDENTITIES = {3: "an IP address hash (value 3)", 4: "a user agent hash (value 4)"}
#: Which data key deduplicates which event type.
DEDUP_KEYS = {"purchase": "order_id", "conversion": "conversion_id"}
COUNTERS = ("stored", "duplicates", "rejected_requests")
MIN_URL_LENGTH = 7
_HASH = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CURRENCY = re.compile(r"[A-Z]{3}")
#: Money is a decimal string; the separator is "." on tracify.dev and "," in the vendor plugin.
_MONEY = re.compile(r"-?[0-9]+(?:[.,][0-9]+)?")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def _error(status: int, message: str, extra: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"status": False, "error": message}, extra)


def _string_problem(data: dict[str, Any], key: str) -> str | None:
    if key not in data:
        return f"data.{key}: required"
    if not isinstance(data[key], str) or not data[key]:
        return f"data.{key}: must be a non-empty string"
    return None


def _money_problem(data: dict[str, Any], kind: str) -> str | None:
    problem = _string_problem(data, "currency")
    if problem is not None:
        return problem
    if not _CURRENCY.fullmatch(data["currency"]):
        return "data.currency: must be a 3-letter upper-case ISO-4217 code"
    keys = ("amount", "value") if kind == "conversion" else ("amount",)
    if not any(key in data for key in keys):
        return "data.amount: required" + (" (or data.value)" if kind == "conversion" else "")
    for key in keys:
        if key in data and (not isinstance(data[key], str) or not _MONEY.fullmatch(data[key])):
            return f'data.{key}: must be a decimal number in a string, e.g. "100.00"'
    return None


def _identity_problem(identity: Any) -> str | None:
    if not isinstance(identity, dict):
        return "identity_data: required, an object of hashed identifier -> identity type"
    for key, value in identity.items():
        if not _HASH.fullmatch(key):
            return f"identity_data.{key}: key must be a 64-character lower-case hex hash"
        if isinstance(value, bool) or value not in (1, 2, 3, 4):
            return f"identity_data.{key}: value must be the integer 1, 2, 3 or 4"
    present = set(identity.values())
    for value, label in REQUIRED_IDENTITIES.items():
        if value not in present:
            return f"identity_data: {label} is required"
    return None


def _event_problem(event: dict[str, Any]) -> str | None:
    """Return the first problem with one event as '<field>: <problem>', relative to the event."""
    url = event.get("url")
    if not isinstance(url, str) or len(url) < MIN_URL_LENGTH:
        return "url: required" if url is None else f"url: must be a string of at least {MIN_URL_LENGTH} characters"
    site = event.get("customer_site_id")
    if not isinstance(site, str) or not _UUID.fullmatch(site):
        return "customer_site_id: required" if site is None else "customer_site_id: must be a UUID string"
    problem = _identity_problem(event.get("identity_data"))
    if problem is not None:
        return problem
    stamp = event.get("datetime")
    if stamp is None:
        return "datetime: required"
    if not isinstance(stamp, str) or not _DATETIME.fullmatch(stamp) or not _parses(stamp):
        return "datetime: must be a UTC time formatted %Y-%m-%d %H:%M:%S, e.g. 2024-06-21 12:36:37"
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        return "type: required" if kind is None else "type: must be one of " + ", ".join(EVENT_TYPES)
    data = event.get("data")
    if not isinstance(data, dict):
        return "data: required" if data is None else "data: must be an object"
    problem = _string_problem(data, "origin")
    if problem is None and kind in DEDUP_KEYS:
        problem = _string_problem(data, DEDUP_KEYS[kind]) or _money_problem(data, kind)
    return problem


def _parses(stamp: str) -> bool:
    try:
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


class TracifySandbox(SandboxBase):
    """The vendor side of Tracify's events API, with a record of what it stored."""

    vendor = "tracify"
    mount_prefix = "tracify"
    #: The site id the built-in configuration sends; this sandbox takes any UUID.
    destination_options = MappingProxyType({"customer_site_id": "00000000-0000-0000-0000-000000000000"})
    settings_keys = frozenset({"max_events_per_request"})
    per_event_results = False

    def __init__(
        self,
        api_keys: Iterable[str] = frozenset({"sandbox-key"}),
        clock: Callable[[], float] = time.time,
        max_events_per_request: int | None = None,
    ) -> None:
        super().__init__(clock)
        self.api_keys = frozenset(api_keys)
        self._default_max_events = positive_int_or_none("max_events_per_request", max_events_per_request)
        self.max_events_per_request = self._default_max_events
        self._seen: dict[str, set[str]] = {kind: set() for kind in DEDUP_KEYS}
        self.events: list[dict[str, Any]] = []
        self.conversion_money_fields: dict[str, str] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def _check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {name: positive_int_or_none(name, value) for name, value in settings.items()}

    def _reset_records(self) -> None:
        self.max_events_per_request = self._default_max_events
        for seen in self._seen.values():
            seen.clear()
        self.events.clear()
        self.conversion_money_fields.clear()
        self.counters.update(dict.fromkeys(COUNTERS, 0))

    def _state(self, include_events: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counters": dict(self.counters),
            "events_stored": len(self.events),
            "max_events_per_request": self.max_events_per_request,
        }
        if include_events:
            out["events"] = list(self.events)
            out["order_ids"] = sorted(self._seen["purchase"])
            out["conversion_ids"] = sorted(self._seen["conversion"])
            out["conversion_money_fields"] = dict(self.conversion_money_fields)
        return out

    def _auth_label(self, query: Mapping[str, str], headers: Any) -> str | None:
        return "token" if header(headers, TOKEN_HEADER) is not None else None

    def count_events(self, path: str, body: bytes) -> int | None:
        return list_length(body, "events")

    def accepting_response(self, path: str, count: int) -> Response:
        return json_response(200, {"status": True})

    def handle(self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes) -> Response:
        token = header(headers, TOKEN_HEADER)
        event_count = None
        if path != EVENTS_PATH:
            response = _error(404, f"no such endpoint: {path}")
        elif method != "POST":
            response = _error(405, f"method {method} not allowed on {EVENTS_PATH}; use POST", {"Allow": "POST"})
        elif token is None or token.strip() not in self.api_keys:
            message = "invalid tracify-token" if token is not None else f"missing {TOKEN_HEADER} header (raw API key)"
            response = _error(401, message)
        else:
            event_count = self.count_events(path, body)
            response = self._events(body)
            if response[0] != 200:
                with self._lock:
                    self.counters["rejected_requests"] += 1
        self._record(method, path, query, self._auth_label(query, headers), event_count, len(body), response[0])
        return response

    def _events(self, body: bytes) -> Response:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body: malformed JSON ({exc})")
        if not isinstance(payload, dict):
            return _error(400, "body: must be a JSON object with an 'events' list")
        events = payload.get("events")
        if events is None:
            return _error(400, "events: required")
        if not isinstance(events, list):
            return _error(400, "events: must be a list of events")
        if not events:
            return _error(400, "events: must contain at least one event")
        limit = self.max_events_per_request
        if limit is not None and len(events) > limit:
            return _error(413, f"events: at most {limit} events per request, got {len(events)}")
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                return _error(400, f"events[{index}]: must be a JSON object")
            problem = _event_problem(event)
            if problem is not None:
                return _error(400, f"events[{index}].{problem}")
        with self._lock:
            for event in events:
                self._store(event)
        return json_response(200, {"status": True})

    def _store(self, event: dict[str, Any]) -> None:
        """Store one valid event unless its order or conversion id was seen; the caller holds the lock."""
        kind = event["type"]
        if kind in DEDUP_KEYS:
            key = event["data"][DEDUP_KEYS[kind]]
            if key in self._seen[kind]:
                self.counters["duplicates"] += 1
                return
            self._seen[kind].add(key)
            if kind == "conversion":
                used = [name for name in ("amount", "value") if name in event["data"]]
                self.conversion_money_fields[key] = "+".join(used)
        self.events.append(event)
        self.counters["stored"] += 1
