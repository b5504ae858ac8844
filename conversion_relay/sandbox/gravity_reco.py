"""Local stand-in for the Yusp / Gravity RECO REST write API (WebshopServlet).

Serves `POST <base>/grrec-<customer>-war/WebshopServlet/(addEvents|addItems|addUsers)`
with optional `?async=true|false`, HTTP Basic auth and a bare JSON array body,
as the vendor page and Gravity R&D's own clients describe it. Compressed
uploads are refused (415), bodies over 1 MB get 413, and null or empty values
(the vendor asks for them to be omitted) and array-valued nameValues (the vendor
wants the name repeated) are refused with 400 and the vendor's error body
`{"message", "faultInfo"}`; `faultInfo` holds a short sandbox category.

Fields the vendor does not list are accepted. Timestamps must be UNIX seconds,
so values of 10^10 or more (milliseconds by mistake) are refused. RECO has no
dedup: a re-sent event is stored again and counted in `resent_events`. Items
and users are full replacements keyed by id, and hidden items stay visible.

Each rule is labelled in `RULES` with where it comes from: documented on the
vendor page (seed 004, yusp.readme.io/reference/rest), in Gravity R&D's own
clients (vendor code), or assumed by this sandbox. docs/vendors/gravity_reco.md
lists the same labels.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import orjson

from conversion_relay.sandbox.base import Response, SandboxBase, header, json_response

#: Every rule this sandbox applies, and its source, so a test passing here is read for what it
#: proves: a documented rule is the vendor's, an assumed one only this sandbox's.
RULES: Mapping[str, str] = MappingProxyType(
    {
        "HTTP Basic authentication": "vendor code (Java and PHP clients)",
        "1 MB per request, 413 above": "documented (seed 004)",
        "compressed uploads refused": "documented (seed 004); the status 415 assumed",
        "null or empty values refused": "assumed (seed 004 asks to omit them, for performance)",
        "array-valued nameValues refused": "assumed (seed 004 says to repeat the name instead)",
        "eventType required": "vendor code (jsondto)",
        "itemId required for item events": "vendor code (jsondto event types)",
        "LOGIN needs userId and cookieId": "vendor code (jsondto)",
        "time in UNIX seconds, 10^10 or more refused": "seconds documented (seed 004 example); refusal assumed",
        "error body {message, faultInfo}": "vendor code (GravityRecEngException)",
        "empty 200 on success": "documented (seed 004)",
        "items and users replaced whole, hidden items kept": "documented (seed 004)",
        "no dedup of events": "assumed (no idempotency key is documented)",
    }
)
MAX_BODY_BYTES = 1_000_000
OPERATIONS = ("addEvents", "addItems", "addUsers")
DEFAULT_CREDENTIALS: Mapping[str, str] = MappingProxyType({"sandbox": "sandbox-key"})
#: Event types about one item, which therefore need `itemId`.
ITEM_EVENTS = frozenset(
    {
        "VIEW",
        "BUY",
        "ADD_TO_CART",
        "REMOVE_FROM_CART",
        "ADD_TO_WISHLIST",
        "REMOVE_FROM_WISHLIST",
        "ADD_TO_FAVORITES",
        "REMOVE_FROM_FAVORITES",
        "RATING",
        "REC_CLICK",
        "HIDE_PRODUCT",
        "UNHIDE_PRODUCT",
    }
)
#: Known fields per operation and their JSON type; `nameValues` is a list of name/value strings.
FIELDS: dict[str, dict[str, str]] = {
    "addEvents": {
        "eventType": "string",
        "itemId": "string",
        "userId": "string",
        "cookieId": "string",
        "time": "seconds",
        "recommendationId": "string",
        "nameValues": "nameValues",
    },
    "addItems": {
        "itemId": "string",
        "title": "string",
        "itemType": "string",
        "hidden": "boolean",
        "fromDate": "seconds",
        "toDate": "seconds",
        "nameValues": "nameValues",
    },
    "addUsers": {"userId": "string", "hidden": "boolean", "nameValues": "nameValues"},
}
REQUIRED = {"addEvents": "eventType", "addItems": "itemId", "addUsers": "userId"}
#: UNIX seconds stay below this until the year 2286; larger values are milliseconds.
MAX_SECONDS = 10_000_000_000
COUNTERS = ("events_stored", "resent_events", "item_writes", "user_writes", "rejected_requests")
_PATH = re.compile(r"/grrec-(?P<customer>[A-Za-z0-9][A-Za-z0-9_.-]*)-war/WebshopServlet/(?P<operation>[A-Za-z]+)")
_TYPES = {"string": "a string", "boolean": "a boolean", "seconds": "an integer (UNIX seconds)"}


def _fault(status: int, message: str, info: str, extra: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"message": message, "faultInfo": info}, extra)


def _empty(value: Any) -> bool:
    return value is None or value == ""


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_SECONDS


def _name_values_problem(pairs: Any, path: str) -> str | None:
    if not isinstance(pairs, list):
        return f"{path}: must be a list of name/value objects"
    for index, pair in enumerate(pairs):
        at = f"{path}[{index}]"
        if not isinstance(pair, dict):
            return f"{at}: must be an object with 'name' and 'value'"
        for key in ("name", "value"):
            if key not in pair:
                return f"{at}.{key}: required"
            if _empty(pair[key]):
                return f"{at}.{key}: null or empty values are not allowed"
            if not isinstance(pair[key], str):
                hint = "; for several values repeat the name" if isinstance(pair[key], list) else ""
                return f"{at}.{key}: must be a string{hint}"
    return None


def _entry_problem(entry: Any, operation: str, path: str) -> str | None:
    """First problem with one array element, as '<path>: <problem>'."""
    if not isinstance(entry, dict):
        return f"{path}: must be a JSON object"
    for key, value in entry.items():
        if _empty(value):
            return f"{path}.{key}: null or empty values are not allowed"
    required = REQUIRED[operation]
    if required not in entry:
        return f"{path}.{required}: required"
    for key, kind in FIELDS[operation].items():
        if key not in entry:
            continue
        if kind == "nameValues":
            problem = _name_values_problem(entry[key], f"{path}.{key}")
            if problem is not None:
                return problem
        elif not _type_ok(entry[key], kind):
            return f"{path}.{key}: must be {_TYPES[kind]}"
    if operation != "addEvents":
        return None
    event_type = entry["eventType"]
    if event_type in ITEM_EVENTS and "itemId" not in entry:
        return f"{path}.itemId: required for {event_type} events"
    if event_type == "LOGIN":
        missing = [key for key in ("userId", "cookieId") if key not in entry]
        if missing:
            return f"{path}.{missing[0]}: required for LOGIN events (userId and cookieId)"
    return None


class GravityRecoSandbox(SandboxBase):
    """The vendor side of Yusp / Gravity RECO's write calls, with what each customer sent."""

    vendor = "gravity_reco"
    mount_prefix = "gravity-reco"
    #: RECO's base URL names the customer; the built-in configuration is customer ``demo``.
    base_path = "/grrec-demo-war/WebshopServlet"
    #: The user of :data:`DEFAULT_CREDENTIALS` (its password is the built-in configuration's key).
    destination_options = MappingProxyType({"username": "sandbox"})
    max_body_bytes = MAX_BODY_BYTES
    per_event_results = False

    def __init__(
        self,
        credentials: Mapping[str, str] = DEFAULT_CREDENTIALS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.credentials = dict(credentials)
        self._event_keys: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.items: dict[str, dict[str, Any]] = {}
        self.item_writes: list[dict[str, Any]] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.user_writes: list[dict[str, Any]] = []
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def _reset_records(self) -> None:
        self._event_keys.clear()
        for records in (self.events, self.items, self.item_writes, self.users, self.user_writes):
            records.clear()
        self.counters.update(dict.fromkeys(COUNTERS, 0))

    def _state(self, include_events: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counters": dict(self.counters),
            "events_stored": len(self.events),
            "items_stored": len(self.items),
            "users_stored": len(self.users),
            "hidden_item_ids": sorted(item_id for item_id, item in self.items.items() if item.get("hidden") is True),
        }
        if include_events:
            out["events"] = list(self.events)
            out["items"] = dict(self.items)
            out["item_writes"] = list(self.item_writes)
            out["users"] = dict(self.users)
            out["user_writes"] = list(self.user_writes)
        return out

    def _auth(self, headers: Any) -> tuple[str | None, bool]:
        scheme, _, token = (header(headers, "Authorization") or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, colon, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except ValueError:
            return "basic", False
        return "basic", bool(colon) and user in self.credentials and self.credentials[user] == password

    def _auth_label(self, query: Mapping[str, str], headers: Any) -> str | None:
        return self._auth(headers)[0]

    def count_events(self, path: str, body: bytes) -> int | None:
        """The entries of the array: events, items or users, one write each."""
        try:
            entries = orjson.loads(body)
        except ValueError:
            return None
        return len(entries) if isinstance(entries, list) else None

    def accepting_response(self, path: str, count: int) -> Response:
        return 200, {}, b""

    def demo_faults(self, refused_prefix: str, opted_out_user_ids: Sequence[str]) -> dict[str, Any]:
        """A body too large (the relay splits the batch) and a server error."""
        return {"statuses": [413, 500]}

    def _route_fields(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        match = _PATH.fullmatch(path)
        return {
            "customer": match["customer"] if match else None,
            "operation": match["operation"] if match else None,
            "async": query.get("async"),
        }

    def _too_large_response(self, length: int) -> Response:
        message = f"Request Entity Too Large: {length} bytes; the limit is {MAX_BODY_BYTES} bytes, split the batch"
        return _fault(413, message, "PAYLOAD_TOO_LARGE")

    def handle(self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes) -> Response:
        match = _PATH.fullmatch(path)
        auth, accepted = self._auth(headers)
        encoding = (header(headers, "Content-Encoding") or "identity").strip().lower()
        event_count = None
        if match is None or match["operation"] not in OPERATIONS:
            response = _fault(404, f"no such operation: {path}", "NOT_FOUND")
        elif method != "POST":
            response = _fault(405, f"use POST for {match['operation']}", "METHOD_NOT_ALLOWED", {"Allow": "POST"})
        elif not accepted:
            message = "invalid credentials" if auth else "missing credentials: use HTTP Basic authentication"
            response = _fault(401, message, "AUTHENTICATION", {"WWW-Authenticate": 'Basic realm="grrec"'})
        elif encoding not in ("", "identity"):
            response = _fault(415, "compressed uploads are not accepted", f"UNSUPPORTED_ENCODING: {encoding}")
        else:
            event_count = self.count_events(path, body)
            response = self._write(match["operation"], query, body)
            if response[0] != 200:
                with self._lock:
                    self.counters["rejected_requests"] += 1
        self._record(method, path, query, auth, event_count, len(body), response[0])
        return response

    def _write(self, operation: str, query: Mapping[str, str], body: bytes) -> Response:
        if query.get("async", "true") not in ("true", "false"):
            return _fault(400, "async: must be true or false", "INVALID_INPUT")
        try:
            entries = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _fault(400, f"body: malformed JSON ({exc})", "INVALID_INPUT")
        if not isinstance(entries, list):
            return _fault(400, "body: must be a JSON array", "INVALID_INPUT")
        for index, entry in enumerate(entries):
            problem = _entry_problem(entry, operation, f"[{index}]")
            if problem is not None:
                return _fault(400, problem, "INVALID_INPUT")
        with self._lock:
            for entry in entries:
                self._store(operation, entry)
        return 200, {}, b""

    def _store(self, operation: str, entry: dict[str, Any]) -> None:
        """Keep one valid entry; the caller holds the lock."""
        if operation == "addEvents":
            key = json.dumps(entry, sort_keys=True)
            if key in self._event_keys:
                self.counters["resent_events"] += 1
            self._event_keys.add(key)
            self.events.append(entry)
            self.counters["events_stored"] += 1
        elif operation == "addItems":
            self.items[entry["itemId"]] = entry
            self.item_writes.append(entry)
            self.counters["item_writes"] += 1
        else:
            self.users[entry["userId"]] = entry
            self.user_writes.append(entry)
            self.counters["user_writes"] += 1
