"""The counting sandbox: the bundled vendor sandboxes, plus a log of every request's ids and times.

    python -m bench.chaos.vendor [--port 0]      # prints the port on its first line

Runs in its own process (it must not share a GIL with the producer it is measured against) and
mounts the vendor sandboxes of ``conversion_relay/sandbox/`` unchanged, each wrapped so that it also records, per
request: when it arrived (before any injected latency), when the sandbox had finished with it,
the status, and which event ids it carried with the vendor's verdict on each.  The ids are the
ones the chaos producer puts in every event: ``event_id`` (Gravity Conversions API),
``data.order_id`` (Tracify) and the ``orderId`` name value (RECO), which are the same string.

``GET /_sandbox/<prefix>/state`` answers as usual with ``?summary=1``; without it, the vendor's
own stored events are left out (they can be large) and ``chaos_log`` holds the request log:
``[arrived, finished, status, kind, ids, copies]`` per request, ``copies`` being the ids the
vendor took (stored or answered as a duplicate), ``kind`` one of ``normal``, ``status``
(injected), ``drop`` (connection closed unanswered) and ``too_large``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from typing import Any

from conversion_relay.sandbox import GravityCapiSandbox, GravityRecoSandbox, SandboxServer, TracifySandbox

#: Mount prefix -> sandbox class.  Two Gravity mounts let a scenario run two destinations of the
#: same vendor with different faults.
MOUNTS: dict[str, type] = {
    "gravity-capi": GravityCapiSandbox,
    "gravity-capi-b": GravityCapiSandbox,
    "tracify": TracifySandbox,
    "gravity-reco": GravityRecoSandbox,
}


def body_ids(vendor: str, body: bytes) -> list[str]:
    """The chaos ids a request body carries, in order (unknown shapes give none)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if vendor == "gravity_capi":
        events = payload.get("data") if isinstance(payload, dict) else None
        return [e.get("event_id") for e in events or [] if isinstance(e, dict) and e.get("event_id")]
    if vendor == "tracify":
        events = payload.get("events") if isinstance(payload, dict) else None
        found = []
        for event in events or []:
            data = event.get("data") if isinstance(event, dict) else None
            if isinstance(data, dict) and data.get("order_id"):
                found.append(data["order_id"])
        return found
    if vendor == "gravity_reco" and isinstance(payload, list):
        found = []
        for entry in payload:
            pairs = entry.get("nameValues") if isinstance(entry, dict) else None
            order = next((p.get("value") for p in pairs or [] if p.get("name") in ("orderId", "OrderId")), None)
            if order:
                found.append(order)
        return found
    return []


class Recording:
    """Mixin for a vendor sandbox: the request log of the chaos suite."""

    chaos_vendor = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self.chaos_log: list[list[Any]] = []

    def request_started(self) -> None:
        self._local.arrived = time.time()
        super().request_started()  # type: ignore[misc]

    def _log(self, status: int | None, kind: str, ids: list[str], copies: list[str]) -> None:
        arrived = getattr(self._local, "arrived", None) or time.time()
        with self._lock:  # type: ignore[attr-defined]
            self.chaos_log.append([arrived, time.time(), status, kind, ids, copies])

    def handle(self, method: str, path: str, query: Any, headers: Any, body: bytes) -> Any:
        response = super().handle(method, path, query, headers, body)  # type: ignore[misc]
        ids = body_ids(self.chaos_vendor, body)
        self._log(response[0], "normal", ids, self._copies(response, ids))
        return response

    def _copies(self, response: Any, ids: list[str]) -> list[str]:
        status, _, raw = response
        if not 200 <= status < 300:
            return []
        return list(ids)

    def record_fault(self, method: str, path: str, query: Any, headers: Any, body: bytes, status: Any) -> None:
        super().record_fault(method, path, query, headers, body, status)  # type: ignore[misc]
        self._log(status, "drop" if status is None else "status", body_ids(self.chaos_vendor, body), [])

    def payload_too_large(self, method: str, path: str, query: Any, headers: Any, length: int) -> Any:
        response = super().payload_too_large(method, path, query, headers, length)  # type: ignore[misc]
        self._log(response[0], "too_large", [], [])
        return response

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        with self._lock:  # type: ignore[attr-defined]
            self.chaos_log = []

    def state(self, include_events: bool = True, include_requests: bool = True) -> dict[str, Any]:
        out = super().state(include_events=False, include_requests=False)  # type: ignore[misc]
        if include_events:
            with self._lock:  # type: ignore[attr-defined]
                out["chaos_log"] = list(self.chaos_log)
        return out


class RecordingGravity(Recording, GravityCapiSandbox):
    chaos_vendor = "gravity_capi"

    def _copies(self, response: Any, ids: list[str]) -> list[str]:
        """Ids the vendor stored (``ok``) or recognised as already stored (``duplicate``)."""
        status, _, raw = response
        if status != 200:
            return []
        try:
            results = json.loads(raw).get("results") or []
        except (ValueError, AttributeError):
            return []
        return [r["event_id"] for r in results if r.get("status") in ("ok", "duplicate") and r.get("event_id")]


class RecordingTracify(Recording, TracifySandbox):
    chaos_vendor = "tracify"


class RecordingReco(Recording, GravityRecoSandbox):
    chaos_vendor = "gravity_reco"


RECORDING = {GravityCapiSandbox: RecordingGravity, TracifySandbox: RecordingTracify, GravityRecoSandbox: RecordingReco}


def build_vendors() -> dict[str, Any]:
    return {prefix: RECORDING[cls]() for prefix, cls in MOUNTS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.vendor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SandboxServer(build_vendors(), port=args.port) as server:
        print(server.port, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
