"""A local vendor sink for the benchmarks: answers like every registered vendor, counts.

Each vendor is mounted where the bundled sandbox server mounts it (``/<mount_prefix>/...``,
:mod:`conversion_relay.sandbox`).  Unlike the sandboxes it stores nothing and checks nothing,
so a million events cost it no memory and little CPU (it shares the machine with everything it
measures): each vendor's sandbox counts the events of a body (``count_events``) and gives the
answer accepting them all (``accepting_response``).  It counts per vendor and keeps arrivals in
0.25 s buckets for the chart.

    python -m bench.sink --port 0        # prints the port on its first line
    GET /stats                           # {"events": n, "requests": r, "by_vendor": {...}, "timeline": [[t, n], ...]}
    POST /reset
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conversion_relay.sandbox import mounted_sandboxes, sandbox_classes

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
#: One sandbox per vendor, used only to count and to answer (never to handle a request).
VENDORS = mounted_sandboxes()


def vendor_url(sink_url: str, vendor: str) -> str:
    """The base URL at which the sink at ``sink_url`` answers as ``vendor`` (its sandbox's
    mount and path): a destination's ``base_url``."""
    stand_in = sandbox_classes()[vendor]
    return f"{sink_url}/{stand_in.mount_prefix}{stand_in.base_path}"


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
        mount, _, rest = self.path.split("?", 1)[0].lstrip("/").partition("/")
        vendor = VENDORS.get(mount)
        if vendor is None:
            return self._send(b'{"error":"no vendor mounted here; use /<mount_prefix>/..."}', status=404)
        count = vendor.count_events("/" + rest, body) or 0
        COUNTER.add(vendor.vendor, count)
        status, headers, payload = vendor.accepting_response("/" + rest, count)
        self._send(payload, status, headers.get("Content-Type", "application/json"))

    def do_GET(self) -> None:  # noqa: N802
        self._send(json.dumps(COUNTER.stats()).encode())

    def _send(self, payload: bytes, status: int = 200, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
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
