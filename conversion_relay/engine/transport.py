"""HTTP to vendors: one keep-alive ``requests`` session per destination and process.

A network failure becomes a :class:`~conversion_relay.outcomes.RetryLater`; nothing here retries or
sleeps.  TLS certificates are always verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Timeout

from conversion_relay.outcomes import RetryLater
from conversion_relay.version import __version__

if TYPE_CHECKING:
    from conversion_relay.vendors.base import Request
    from conversion_relay.vendors.destination import DestinationSettings


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport:
    def __init__(self, destination: DestinationSettings, pool_size: int = 4) -> None:
        self.destination = destination
        # ``total`` bounds connect and read together: the in-flight mark a drain sets before a
        # request (see conversion_relay.store.lease) must outlast it.
        self.timeout = Timeout(
            connect=destination.connect_timeout_seconds,
            read=destination.read_timeout_seconds,
            total=destination.request_timeout_seconds,
        )
        self.session = requests.Session()
        self.session.verify = True
        # Retries belong to the delivery engine, which knows the retry horizon and backoff.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": f"conversion-relay/{__version__}", "Accept": "application/json"})

    def send(self, request: Request) -> Response | RetryLater:
        try:
            response = self.session.request(
                request.method,
                request.url,
                params=request.params,
                data=request.body,
                headers=request.headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            return RetryLater(reason="timeout", excerpt=f"no answer within {self.timeout.total} s")
        except requests.ConnectionError as exc:
            return RetryLater(reason="connection_error", excerpt=_describe(exc))
        except requests.RequestException as exc:
            return RetryLater(reason="request_error", excerpt=_describe(exc))
        return Response(status=response.status_code, headers=response.headers, body=response.content)


def _describe(exc: Exception) -> str:
    """The exception's kind, without its message: messages carry URLs, which may carry secrets."""
    root = exc
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    kind = type(root).__name__
    return f"{type(exc).__name__} ({kind})" if root is not exc else kind
