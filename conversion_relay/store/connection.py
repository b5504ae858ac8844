"""Connecting to Redis: one client factory, and the TLS options a ``rediss://`` URL carries.

Every part of the relay -- producers, drains, the scheduler, the CLI -- and Celery's broker and
result backend read a Redis URL the same way, so the options are parsed here once.  redis-py
verifies the server's certificate by default, but kombu turns a ``rediss://`` broker URL
without options into *no* verification (with a warning), and Celery's result backend refuses
such a URL outright; so verification defaults to ``required`` as in redis-py.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from conversion_relay.errors import ConfigurationError


def connect(url: str, *, socket_timeout: float | None = 10.0) -> redis.Redis:
    """A Redis client with the timeouts and health checks every part of the relay uses.

    The client never retries a command by itself: redis-py would re-send one that timed out,
    and a re-sent append or outcome may be one Redis already ran.  The relay decides.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )


def connect_async(url: str, *, socket_timeout: float | None = 10.0) -> redis.asyncio.Redis:
    """:func:`connect` for asyncio (``redis.asyncio``): the same timeouts, health checks and no
    retries of its own.  It connects on first use, in the event loop that uses it."""
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry=AsyncRetry(NoBackoff(), 0),
    )


#: ``ssl_cert_reqs`` values every client (redis-py, kombu, Celery's backend) reads the same way.
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


#: TLS options a ``rediss://`` URL may carry besides ``ssl_cert_reqs`` and ``ssl_check_hostname``.
TLS_PATH_OPTIONS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")


_BOOLEANS = {"true": True, "false": False}


def redis_tls(url: str, setting: str) -> tuple[str, dict[str, Any] | None]:
    """A Redis URL without its ``ssl_*`` options, and those options as Celery takes them.

    Returns ``(url, None)`` for anything but ``rediss://`` (plain Redis, RabbitMQ).  For
    ``rediss://`` the options always hold ``ssl_cert_reqs``: ``CERT_REQUIRED`` unless the URL
    says otherwise, so no client of the relay skips verifying the server unless told to.

    Raises:
        ConfigurationError: ``ssl_*`` options on a ``redis://`` URL (TLS would silently be off),
            an unknown option or value; naming ``setting``, never the URL (it may hold a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {k: v for k, v in query if k.startswith("ssl_")}
    if scheme != "rediss":
        if given and scheme in ("redis", "unix"):
            raise ConfigurationError(
                f"{setting}: {', '.join(sorted(given))} only apply to TLS; use a rediss:// URL "
                "(or remove them to connect without TLS)."
            )
        return url, None
    known = {"ssl_cert_reqs", "ssl_check_hostname", *TLS_PATH_OPTIONS}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigurationError(
            f"{setting}: unknown TLS option {', '.join(unknown)}; a rediss:// URL takes {', '.join(sorted(known))}."
        )
    reqs = given.get("ssl_cert_reqs", "required")
    if reqs not in CERT_REQS:
        raise ConfigurationError(f"{setting}: ssl_cert_reqs={reqs!r}; use required (the default), optional or none.")
    options: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS[reqs]}
    options.update({k: given[k] for k in TLS_PATH_OPTIONS if given.get(k)})
    if "ssl_check_hostname" in given:
        check = _BOOLEANS.get(given["ssl_check_hostname"].lower())
        if check is None:
            raise ConfigurationError(f"{setting}: ssl_check_hostname must be true or false.")
        options["ssl_check_hostname"] = check and reqs != "none"
    rest = urlencode([(k, v) for k, v in query if not k.startswith("ssl_")])
    return urlunsplit(parts._replace(query=rest)), options


def redis_location(url: str) -> str:
    """Where a Redis URL points, for messages: ``host:port`` or the socket path, never credentials."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "a Unix socket"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:  # a port that is not a number, a broken IPv6 address
        return "the configured address"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
