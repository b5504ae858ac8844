"""Loopback HTTP host for vendor sandboxes.

One server mounts several vendor sandboxes under path prefixes so a test,
the demo or a benchmark needs a single port. Transport concerns (framing,
body limits, fault injection, keep-alive) live here; vendor rules live in
each sandbox.
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from conversion_relay.sandbox.base import Response, json_response
from conversion_relay.sandbox.faults import Faults

CONTROL_PREFIX = "_sandbox"
CONTROL_BODY_LIMIT = 10_000_000
# Bodies above the vendor limit are read and discarded up to this size so the
# client still sees the 413; beyond it the connection is closed instead.
DRAIN_LIMIT = 64 * 1024 * 1024
_CHUNK = 64 * 1024


class VendorSandbox(Protocol):
    """What the server needs from a vendor sandbox."""

    faults: Faults
    max_body_bytes: int | None

    def handle(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Response: ...
    def payload_too_large(
        self, method: str, path: str, query: dict[str, str], headers: Any, length: int
    ) -> Response: ...
    def record_fault(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes, status: int | None
    ) -> None: ...
    def request_started(self) -> None: ...
    def request_finished(self) -> None: ...
    def configure(self, **kw: Any) -> None: ...
    def state(self, include_events: bool = True, include_requests: bool = True) -> dict[str, Any]: ...
    def reset(self) -> None: ...


class _FramingError(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VendorSandbox/1.0"
    disable_nagle_algorithm = True
    timeout = 75
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: it costs time under benchmark load."""

    def version_string(self) -> str:
        return self.server_version

    def do_POST(self) -> None:
        self._dispatch()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        prefix, _, rest = split.path.lstrip("/").partition("/")
        rest = "/" + rest
        vendor = self.server.vendors.get(prefix)
        limit = CONTROL_BODY_LIMIT if prefix == CONTROL_PREFIX else getattr(vendor, "max_body_bytes", None)
        try:
            body, too_large = self._read_body(limit)
        except _FramingError as exc:
            self.close_connection = True
            self._send(*json_response(400, {"error": str(exc)}))
            return
        if prefix == CONTROL_PREFIX:
            self._send(
                *(
                    json_response(413, {"error": "control request body too large"})
                    if too_large
                    else self._control_response(rest, query, body)
                )
            )
        elif vendor is None:
            self._send(*json_response(404, {"error": f"no vendor sandbox mounted at /{prefix}"}))
        else:
            self._vendor_request(vendor, rest, query, body, too_large)

    def _vendor_request(
        self, vendor: VendorSandbox, path: str, query: dict[str, str], body: bytes, too_large: int | None
    ) -> None:
        action = vendor.faults.next_action()
        vendor.request_started()
        try:
            if action.latency_seconds:
                time.sleep(action.latency_seconds)
            if action.kind == "drop":
                vendor.record_fault(self.command, path, query, self.headers, body, None)
                self._drop()
                return
            if action.kind == "status":
                vendor.record_fault(self.command, path, query, self.headers, body, action.status)
                response = (action.status, action.headers, action.body)
            elif too_large is not None:
                response = vendor.payload_too_large(self.command, path, query, self.headers, too_large)
            else:
                response = vendor.handle(self.command, path, query, self.headers, body)
        except Exception as exc:  # a sandbox bug must surface to the client, not kill the thread
            response = json_response(500, {"error": f"sandbox internal error: {exc!r}"})
        finally:
            vendor.request_finished()
        self._send(*response)

    def _control_response(self, rest: str, query: dict[str, str], body: bytes) -> Response:
        prefix, _, action = rest.strip("/").partition("/")
        if not prefix or action not in ("faults", "state", "reset"):
            return json_response(
                404,
                {
                    "error": f"unknown control endpoint /{CONTROL_PREFIX}{rest}; "
                    "use /_sandbox/<prefix>/(faults|state|reset)"
                },
            )
        vendor = self.server.vendors.get(prefix)
        if vendor is None:
            return json_response(404, {"error": f"no vendor sandbox mounted at /{prefix}"})
        expected = "GET" if action == "state" else "POST"
        if self.command != expected:
            return json_response(
                405, {"error": f"use {expected} for /{CONTROL_PREFIX}/{prefix}/{action}"}, {"Allow": expected}
            )
        if action == "state":
            summary = query.get("summary", "").lower() in ("1", "true", "yes")
            return json_response(200, vendor.state(include_events=not summary, include_requests=not summary))
        if action == "reset":
            vendor.reset()
            return json_response(200, {"ok": True})
        try:
            settings = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            return json_response(400, {"error": f"body: malformed JSON ({exc})"})
        if not isinstance(settings, dict):
            return json_response(400, {"error": "body: must be a JSON object of fault settings"})
        try:
            vendor.configure(**settings)
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, {"ok": True, **vendor.state(include_events=False, include_requests=False)})

    def _read_body(self, limit: int | None) -> tuple[bytes, int | None]:
        """Return (body, None), or (b"", size) when the body exceeds `limit`."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        header = self.headers.get("Content-Length")
        if header is None:
            return b"", None
        try:
            length = int(header)
            if length < 0:
                raise ValueError(header)
        except ValueError:
            raise _FramingError(f"Content-Length: not a non-negative integer ({header!r})") from None
        if limit is not None and length > limit:
            self._discard(length)
            return b"", length
        return self.rfile.read(length), None

    def _read_chunked(self, limit: int | None) -> tuple[bytes, int | None]:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(_CHUNK).split(b";", 1)[0], 16)
            except ValueError:
                raise _FramingError("Transfer-Encoding: malformed chunk size") from None
            if size == 0:
                break
            total += size
            if total > DRAIN_LIMIT:
                self.close_connection = True
                return b"", total
            chunks.append(self.rfile.read(size))
            self.rfile.readline(_CHUNK)
        while self.rfile.readline(_CHUNK) not in (b"\r\n", b"\n", b""):
            pass
        if limit is not None and total > limit:
            return b"", total
        return b"".join(chunks), None

    def _discard(self, length: int) -> None:
        """Drain an oversized body so the connection stays usable for the 413 reply."""
        if length > DRAIN_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, _CHUNK))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], vendors: dict[str, VendorSandbox]) -> None:
        self.vendors = vendors
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Skip HTTPServer's getfqdn(): a reverse DNS lookup is pointless on loopback."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Keep-alive threads would otherwise keep answering after stop()."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class SandboxServer:
    """Vendor sandboxes served over loopback, mounted at /<prefix>/."""

    def __init__(self, vendors: dict[str, VendorSandbox], host: str = "127.0.0.1", port: int = 0) -> None:
        for prefix in vendors:
            if not prefix or "/" in prefix or prefix == CONTROL_PREFIX:
                raise ValueError(f"invalid vendor prefix {prefix!r}")
        self._vendors = dict(vendors)
        self._httpd = _HTTPServer((host, port), self._vendors)
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_for(self, prefix: str) -> str:
        if prefix not in self._vendors:
            raise KeyError(f"no vendor sandbox mounted at /{prefix}")
        return f"{self.url}/{prefix}"

    def vendor(self, prefix: str) -> Any:
        return self._vendors[prefix]

    def start(self) -> SandboxServer:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"sandbox-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.close_open_connections()
        self._httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
