"""``conversion-relay check-config``: everything wrong with a configuration, in one report.

A deploy runs the check before it starts workers, so the report says at once what a worker
would refuse one restart at a time: which configuration is in effect, every problem of every
table, every API key variable that is not set, whether the relay's Redis answers and keeps
what it stores (``maxmemory-policy noeviction``), and each destination as the relay will use it.
Secrets never appear: keys are named by their variable, Redis by host and port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from conversion_relay.config.rules import default_api_key_env, missing_key_message, missing_secrets, redis_url_problem
from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.config.source import SANDBOX_DESCRIPTION, describe_source, load_document
from conversion_relay.errors import ConfigurationError
from conversion_relay.store.connection import connect, redis_location
from conversion_relay.store.memory import MemoryGuard
from conversion_relay.vendors import adapter_classes
from conversion_relay.vendors.destination import DestinationSettings

#: How long the check waits for Redis to connect and answer.
REDIS_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class RedisReport:
    """The relay's Redis as the check found it.  ``reachable`` is None when it was not tried
    (no usable URL)."""

    location: str
    reachable: bool | None
    eviction_policy: str | None = None
    #: The policy may evict, and ``relay.allow_evicting_redis`` accepts that.
    eviction_accepted: bool = False


@dataclass(frozen=True)
class DestinationReport:
    """One destination as the relay will use it; the key only as its variable's name."""

    name: str
    vendor: str
    base_url: str
    enabled: bool
    api_key_env: str
    api_key_set: bool
    max_events: int
    max_events_limit: int
    max_events_limit_documented: bool
    max_bytes: int
    max_bytes_limit: int
    max_bytes_limit_documented: bool
    parallel_drains: int
    rate_limit_per_second: float


@dataclass(frozen=True)
class ConfigReport:
    """What ``check-config`` prints (:meth:`lines`) or emits as JSON (:meth:`as_dict`)."""

    #: The file's path, "built-in sandbox configuration", or None when none is named.
    source: str | None
    problems: list[str] = field(default_factory=list)
    key_prefix: str | None = None
    redis: RedisReport | None = None
    destinations: list[DestinationReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when a worker would start with this configuration and environment."""
        return not self.problems

    def lines(self) -> list[str]:
        """The report for people, one fact per line, the problems last."""
        out = [f"configuration: {self.source or 'none (CONVERSION_RELAY_CONFIG is not set)'}"]
        if self.key_prefix:
            out.append(f"key prefix: {self.key_prefix}")
        if self.redis is not None:
            out.append(f"redis: {_redis_line(self.redis)}")
        if self.destinations:
            out.append("destinations:")
        for d in self.destinations:
            state = "enabled" if d.enabled else "disabled"
            if self.source == SANDBOX_DESCRIPTION:
                key = "the sandbox's key"
            else:
                key = f"key from {d.api_key_env}: {'set' if d.api_key_set else 'NOT SET'}"
            out.append(f"  {d.name}: {d.vendor} at {d.base_url} ({state}; {key})")
            events = f"limit {d.max_events_limit:,}, {_known(d.max_events_limit_documented)}"
            size = f"limit {d.max_bytes_limit:,}, {_known(d.max_bytes_limit_documented)}"
            out.append(
                f"    max_events {d.max_events:,} ({events}), max_bytes {d.max_bytes:,} ({size}), "
                f"parallel_drains {d.parallel_drains}, rate limit {_rate(d.rate_limit_per_second)}"
            )
        if self.problems:
            count = len(self.problems)
            out.append(f"{count} problem{'s' if count != 1 else ''}:")
            out.extend(f"  {problem}" for problem in self.problems)
        else:
            out.append("ok: a worker would start with this configuration")
        return out

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, for deploy scripts and monitoring."""
        return {
            "ok": self.ok,
            "configuration": self.source,
            "key_prefix": self.key_prefix,
            "redis": asdict(self.redis) if self.redis is not None else None,
            "destinations": [asdict(d) for d in self.destinations],
            "problems": list(self.problems),
        }


def check_configuration(environ: Mapping[str, str], *, redis_timeout: float = REDIS_TIMEOUT_SECONDS) -> ConfigReport:
    """Check the configuration ``environ`` names, its API keys and its Redis, all at once.

    Never raises for a problem of the configuration or of Redis: each is a line of the report.
    """
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings(environ)
    except ConfigurationError as exc:
        problems.extend(exc.problems)
    document = _document(environ) if settings is None else None
    if settings is not None:
        problems.extend(missing_secrets(settings))
    elif document is not None:
        problems.extend(_missing_keys_of(document, environ))
    url = settings.redis_url if settings is not None else _redis_url(document, environ)
    redis_report = None
    if url and redis_url_problem(url) is None:
        redis_report, redis_problem = _check_redis(url, settings, redis_timeout)
        if redis_problem:
            problems.append(redis_problem)
    return ConfigReport(
        source=describe_source(environ),
        problems=problems,
        key_prefix=settings.key_prefix if settings is not None else None,
        redis=redis_report,
        destinations=[_destination(d) for d in settings.destinations.values()] if settings is not None else [],
    )


def _document(environ: Mapping[str, str]) -> Mapping[str, Any] | None:
    """The parsed file of a configuration that did not load (None for the sandbox, or when
    the file cannot be read), so that its keys and Redis are checked anyway."""
    try:
        document, sandbox = load_document(environ)
    except ConfigurationError:
        return None
    return None if sandbox else document


def _missing_keys_of(document: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """The key variables a configuration that did not load names and the environment lacks."""
    tables = document.get("destinations")
    missing = []
    for name, table in tables.items() if isinstance(tables, Mapping) else ():
        if not isinstance(table, Mapping) or table.get("enabled") is False:
            continue
        key_env = table.get("api_key_env")
        key_env = key_env if isinstance(key_env, str) and key_env else default_api_key_env(str(name))
        if not environ.get(key_env):
            missing.append(missing_key_message(str(name), key_env))
    return missing


def _redis_url(document: Mapping[str, Any] | None, environ: Mapping[str, str]) -> str | None:
    """The Redis URL of a configuration that did not load."""
    if environ.get("REDIS_URL"):
        return environ["REDIS_URL"]
    relay = document.get("relay") if document is not None else None
    url = relay.get("redis_url") if isinstance(relay, Mapping) else None
    return url if isinstance(url, str) else None


def _check_redis(url: str, settings: Settings | None, timeout: float) -> tuple[RedisReport, str | None]:
    """Ping the relay's Redis and read its eviction policy; the report and the problem, if any."""
    where = redis_location(url)
    client = connect(url, socket_timeout=timeout)
    client.connection_pool.connection_kwargs["socket_connect_timeout"] = timeout
    try:
        client.ping()
        policy = str(client.info("memory").get("maxmemory_policy", "noeviction"))
        if settings is None or policy == "noeviction":
            return RedisReport(where, True, policy), None
        try:
            MemoryGuard(client, settings).check_policy()
        except ConfigurationError as exc:
            return RedisReport(where, True, policy), f"relay.allow_evicting_redis: {exc}"
        return RedisReport(where, True, policy, eviction_accepted=True), None
    except redis.AuthenticationError as exc:
        problem = (
            f"Redis at {where} refused the credentials ({type(exc).__name__}); check REDIS_URL or relay.redis_url."
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        problem = (
            f"Redis at {where} is not reachable ({type(exc).__name__}, waited up to {timeout:g} s); "
            "is it running? check REDIS_URL or relay.redis_url."
        )
    except redis.RedisError as exc:
        problem = f"Redis at {where} refused the check ({type(exc).__name__}); the relay needs PING and INFO there."
    finally:
        client.close()
    return RedisReport(where, False), problem


def _destination(d: DestinationSettings) -> DestinationReport:
    adapter = adapter_classes()[d.vendor]
    return DestinationReport(
        name=d.name,
        vendor=d.vendor,
        base_url=d.base_url,
        enabled=d.enabled,
        api_key_env=d.api_key_env,
        api_key_set=bool(d.api_key),
        max_events=d.max_events,
        max_events_limit=adapter.max_events_limit,
        max_events_limit_documented=adapter.max_events_documented,
        max_bytes=d.max_bytes,
        max_bytes_limit=adapter.max_bytes_limit,
        max_bytes_limit_documented=adapter.max_bytes_documented,
        parallel_drains=d.parallel_drains,
        rate_limit_per_second=d.rate_limit_per_second,
    )


def _redis_line(r: RedisReport) -> str:
    if r.reachable is None:
        return f"{r.location}, not checked"
    if not r.reachable:
        return f"{r.location}, NOT REACHABLE"
    accepted = " (may evict events: accepted by relay.allow_evicting_redis)" if r.eviction_accepted else ""
    return f"{r.location}, reachable, maxmemory-policy {r.eviction_policy}{accepted}"


def _known(documented: bool) -> str:
    return "documented by the vendor" if documented else "assumed: the vendor documents none"


def _rate(per_second: float) -> str:
    return f"{per_second:g}/s" if per_second else "none"
