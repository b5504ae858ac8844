"""A local vendor sink for the benchmarks: answers like each of the four vendors, counts.

Unlike the sandboxes it stores nothing and checks nothing, so a million events cost it no
memory and little CPU (it shares the machine with everything it measures).  It counts events by
a key each vendor's event carries once (``"event_name":`` for the Gravity Conversions API,
``"properties":`` for Gravity Field, ``"identity_data":`` for Tracify, ``"eventType":`` for
RECO; quotes inside JSON strings are escaped, so a value cannot fake one), per vendor, and keeps
arrivals in 0.25 s buckets for the chart.

    python -m bench.sink --port 0        # prints the port on its first line
    GET /stats                           # {"events": n, "requests": r, "timeline": [[t, n], ...]}
    POST /reset
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKET_SECONDS = 0.25


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.requests = 0
        self.by_vendor: dict[str, int] = {}
        self.started: float | None = None
        self.buckets: dict[int, int] = {}

    def add(self, vendor: str, events: int) -> None:
        now = time.time()
        with self.lock:
            if self.started is None:
                self.started = now
            self.events += events
            self.by_vendor[vendor] = self.by_vendor.get(vendor, 0) + events
            self.requests += 1
            bucket = int((now - self.started) / BUCKET_SECONDS)
            self.buckets[bucket] = self.buckets.get(bucket, 0) + events

    def stats(self) -> dict[str, object]:
        with self.lock:
            last = max(self.buckets, default=-1)
            timeline = [[b * BUCKET_SECONDS, self.buckets.get(b, 0)] for b in range(last + 1)]
            return {
                "events": self.events,
                "requests": self.requests,
                "by_vendor": dict(self.by_vendor),
                "started": self.started,
                "timeline": timeline,
            }


COUNTER = Counter()
_OK = b'{"status":"ok"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, a small response
    # waits for the client's delayed ACK (40 ms) — per request, for a vendor of one user each.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/reset":
            COUNTER.reset()
            return self._send(b"{}")
        path = self.path.split("?", 1)[0]
        if path.endswith("/ssapi/page"):
            COUNTER.add("gravity_field", 1)
            return self._send(b'{"user":{"slid":null},"session":{"sl":null}}')
        if path.endswith("/ssapi/event"):
            COUNTER.add("gravity_field", body.count(b'"properties":'))
            return self._send(b"", status=204)
        if path.endswith("/api/v1/events"):
            COUNTER.add("tracify", body.count(b'"identity_data":'))
            return self._send(b'{"status":true}')
        if "/WebshopServlet/" in path:
            COUNTER.add("gravity_reco", body.count(b'"eventType":') or body.count(b'"itemId":'))
            return self._send(b"")
        count = body.count(b'"event_name":')
        COUNTER.add("gravity_capi", count)
        results = b",".join([_OK] * count)
        self._send(
            b'{"events_received":%d,"events_processed":%d,"events_errored":0,"results":[%s],"test_mode":false}'
            % (count, count, results)
        )

    def do_GET(self) -> None:  # noqa: N802
        self._send(json.dumps(COUNTER.stats()).encode())

    def _send(self, payload: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sink")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    print(server.server_port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
