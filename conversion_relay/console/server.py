"""Serving the console: the standard library's WSGI server, one thread per request.

Requests are logged without their query strings (a filter may name a reason, never a person,
but the rule is simpler kept whole): method, path and status only.
"""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from conversion_relay.console.app import ConsoleApp

log = logging.getLogger("conversion_relay.console")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.info("%s %s %s", self.command, self.path.split("?", 1)[0], code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base class's name
        log.debug("console: " + format, *args)


class ConsoleServer:
    """``ConsoleServer(app, host, port).start()``; ``port=0`` takes a free one (see :attr:`url`)."""

    def __init__(self, app: ConsoleApp, host: str = "127.0.0.1", port: int = 8766) -> None:
        self._server = make_server(
            host, port, app, server_class=_ThreadingServer6 if ":" in host else _ThreadingServer, handler_class=_Handler
        )
        self.host = host
        self.port = self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="console", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
