"""Settings: one TOML file named by ``CONVERSION_RELAY_CONFIG``, secrets from the environment.

The file has a ``[relay]`` table for the engine and one ``[destinations.<name>]`` table per
destination (a configured account of a vendor)::

    [relay]
    flush_deadline_seconds = 1.0

    [destinations.gravity]
    vendor = "gravity_capi"
    base_url = "https://api.trygravity.ai"
    api_key_env = "GRAVITY_API_KEY"

Everything is checked when the settings are loaded, so a worker or producer with a bad file
refuses to start with a message naming the key (``destinations.gravity.max_events: ...``)
instead of failing on the first event.  Without a file, :func:`builtin_settings` gives a
configuration that points every destination at the local vendor sandbox, so the demo needs no
file and nothing is ever sent to a real vendor by accident.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from worker.errors import ConfigurationError, format_messages

#: Environment variable naming the TOML configuration file.
CONFIG_ENV = "CONVERSION_RELAY_CONFIG"
#: Where the built-in configuration expects the vendor sandbox.
SANDBOX_URL_ENV = "CONVERSION_RELAY_SANDBOX_URL"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
#: API key the sandboxes accept when the built-in configuration is used.
SANDBOX_API_KEY = "sandbox-key"

#: Most partitions (parallel drains) a destination may have.
MAX_PARTITIONS = 16

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


@dataclass(frozen=True)
class DestinationSettings:
    """One configured account of a vendor.

    ``api_key`` is read from the environment variable named by ``api_key_env`` and is left out
    of ``repr`` so that it cannot reach a log line through a stray ``%r``.
    """

    name: str
    vendor: str
    base_url: str
    api_key: str = field(repr=False)
    api_key_env: str
    connect_timeout_seconds: float
    read_timeout_seconds: float
    max_events: int
    max_bytes: int
    test_event_code: str | None = None
    enabled: bool = True
    #: Requests per second allowed to all workers together; 0 for no limit.
    rate_limit_per_second: float = 0.0
    #: Destinations with the same key share one limit (default: the vendor and API key).
    rate_limit_key: str = ""
    #: Drain tasks that may work this destination at once (vendors that want parallel requests).
    parallel_drains: int = 1
    #: Canonical event names this destination never receives (counted as skipped).
    skip_events: frozenset[str] = frozenset()
    #: Most events the destination's stream may hold; ``enqueue`` refuses more (0: no cap).
    max_backlog_events: int = 1_000_000
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        """Celery queue of this destination: one per destination, so a slow vendor waits alone."""
        return f"relay.{self.name}"

    @property
    def request_timeout_seconds(self) -> float:
        """Longest a request may last: the transport enforces it as a total timeout."""
        return self.connect_timeout_seconds + self.read_timeout_seconds

    @property
    def partitions(self) -> int:
        """The destination's stream is split into one partition per parallel drain."""
        return self.parallel_drains


@dataclass(frozen=True)
class Settings:
    """Engine settings plus the destinations.  Build with :func:`load_settings`."""

    redis_url: str
    broker_url: str
    key_prefix: str = "cr"
    #: A partial batch leaves at the latest this long after its oldest event was enqueued.
    flush_deadline_seconds: float = 1.0
    #: A batch that keeps failing transiently is dead-lettered this long after its first failure.
    retry_horizon_seconds: float = 24 * 3600
    #: 0 means: no limit on attempts, only the horizon counts.
    max_attempts: int = 0
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 600.0
    #: Longest Retry-After honoured; a longer one is treated as this (the batch waits in Redis).
    max_retry_after_seconds: float = 3600.0
    #: A drain owns its partition by a lease this long, renewed every ``lease_seconds / 5`` by
    #: a heartbeat thread.  A killed worker's partition is taken over this long after it died.
    lease_seconds: float = 5.0
    #: A destination that keeps failing is probed at least this often (the breaker half-opens).
    probe_interval_seconds: float = 5.0
    #: An event handed out this many times without an ack is dead-lettered (poison guard).
    max_deliveries: int = 10
    #: Celery's Redis visibility timeout: an unacked task message comes back after this long.
    visibility_timeout_seconds: float = 3600.0
    #: How often workers look for destinations that have work and no drainer.
    tick_seconds: float = 0.25
    #: A drain task hands over to a fresh task after this long, so no task outlives the
    #: visibility timeout and the queues stay fair.
    drain_budget_seconds: float = 30.0
    #: Region used to read phone numbers written without a country code (ISO 3166 alpha-2).
    default_phone_region: str | None = None
    #: 0 keeps dead letters until they are replayed or purged.
    dead_letter_ttl_seconds: float = 0.0
    #: The same ``enqueue`` call (destinations, event ids and names) again within this long is
    #: recognised and not stored twice, so a retry after a timeout is safe.  0 turns it off.
    enqueue_dedup_seconds: float = 120.0
    #: Longest ``enqueue`` waits for Redis before raising ``EnqueueError`` (``maybe_stored``).
    enqueue_timeout_seconds: float = 2.0
    #: Above this fraction of Redis ``maxmemory``, ``enqueue`` refuses new events so that
    #: outcomes, leases and broker messages always have room.
    memory_high_water: float = 0.9
    #: Accept a Redis whose ``maxmemory-policy`` may evict keys (events would be lost).
    allow_evicting_redis: bool = False
    destinations: Mapping[str, DestinationSettings] = field(default_factory=dict)

    def destination(self, name: str) -> DestinationSettings:
        try:
            return self.destinations[name]
        except KeyError:
            known = ", ".join(sorted(self.destinations)) or "none"
            raise ConfigurationError(
                f"destination {name!r} is not configured (configured: {known}); "
                f"add a [destinations.{name}] table to the configuration file."
            ) from None

    @property
    def enabled_destinations(self) -> list[DestinationSettings]:
        return [d for d in self.destinations.values() if d.enabled]

    @property
    def secrets(self) -> list[str]:
        """Every secret value, for the log and Sentry scrubbers."""
        return [d.api_key for d in self.destinations.values() if d.api_key]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


class RelaySchema(Schema):
    """The ``[relay]`` table."""

    class Meta:
        unknown = RAISE

    redis_url = fields.String()
    broker_url = fields.String()
    key_prefix = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,32}\Z"))
    flush_deadline_seconds = fields.Float(validate=validate.Range(min=0.0, max=60.0))
    retry_horizon_seconds = fields.Float(validate=validate.Range(min=0.0))
    max_attempts = fields.Integer(validate=validate.Range(min=0))
    backoff_base_seconds = fields.Float(validate=validate.Range(min=0.0))
    backoff_cap_seconds = fields.Float(validate=validate.Range(min=0.0))
    max_retry_after_seconds = fields.Float(validate=validate.Range(min=0.0))
    lease_seconds = fields.Float(validate=validate.Range(min=0.5, max=300.0))
    probe_interval_seconds = fields.Float(validate=validate.Range(min=0.1, max=3600.0))
    #: Replaced by ``lease_seconds``; refused with a message that says so.
    reclaim_idle_seconds = fields.Raw(load_only=True)
    max_deliveries = fields.Integer(validate=validate.Range(min=1))
    visibility_timeout_seconds = fields.Float(validate=validate.Range(min=1.0))
    tick_seconds = fields.Float(validate=validate.Range(min=0.01, max=60.0))
    drain_budget_seconds = fields.Float(validate=validate.Range(min=0.1))
    default_phone_region = fields.String(
        allow_none=True, validate=validate.Regexp(r"^[A-Z]{2}\Z", error="Use an ISO 3166 alpha-2 code such as DE.")
    )
    dead_letter_ttl_seconds = fields.Float(validate=validate.Range(min=0.0))
    enqueue_dedup_seconds = fields.Float(validate=validate.Range(min=0.0, max=86400.0))
    enqueue_timeout_seconds = fields.Float(validate=validate.Range(min=0.01, max=60.0))
    memory_high_water = fields.Float(validate=validate.Range(min=0.1, max=0.99))
    allow_evicting_redis = fields.Boolean()

    @validates_schema
    def _renamed(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "reclaim_idle_seconds" in data:
            raise ValidationError(
                "Renamed to lease_seconds: a dead drain's events are now taken over when its lease "
                "runs out (default 5 s), not after they sat idle; remove the key or rename it.",
                "reclaim_idle_seconds",
            )


class DestinationSchema(Schema):
    """Keys every ``[destinations.<name>]`` table accepts; vendors subclass it for their own."""

    class Meta:
        unknown = RAISE

    vendor = fields.String(required=True)
    base_url = fields.Url(require_tld=False, schemes={"http", "https"})
    api_key_env = fields.String(validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]*\Z"))
    api_key = fields.Raw(load_only=True)
    connect_timeout_seconds = fields.Float(validate=validate.Range(min=0.01, max=120.0))
    read_timeout_seconds = fields.Float(validate=validate.Range(min=0.01, max=600.0))
    max_events = fields.Integer(validate=validate.Range(min=1))
    max_bytes = fields.Integer(validate=validate.Range(min=1024))
    test_event_code = fields.String(allow_none=True)
    enabled = fields.Boolean()
    rate_limit_per_second = fields.Float(validate=validate.Range(min=0.0))
    rate_limit_key = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,64}\Z"))
    parallel_drains = fields.Integer(validate=validate.Range(min=1, max=MAX_PARTITIONS))
    skip_events = fields.List(fields.String())
    max_backlog_events = fields.Integer(validate=validate.Range(min=0))

    @validates_schema
    def _no_inline_key(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "api_key" in data:
            raise ValidationError(
                "Secrets do not belong in the file; put the key in an environment variable "
                "and name that variable in api_key_env.",
                "api_key",
            )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Load and check the settings named by the environment.

    Args:
        environ: the environment to read; ``os.environ`` when omitted.

    Raises:
        ConfigurationError: naming each bad key and what to do about it.
    """
    env = os.environ if environ is None else environ
    path = env.get(CONFIG_ENV)
    if path:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigurationError(f"{CONFIG_ENV}: no file at {path!r}; fix the path or unset it.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: not valid TOML ({exc}).") from None
    else:
        document = builtin_document(env)
    return settings_from_document(document, env)


def builtin_document(env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration used when no file is named: every vendor at the local sandbox."""
    from worker.vendors import adapter_classes

    sandbox = env.get(SANDBOX_URL_ENV, DEFAULT_SANDBOX_URL).rstrip("/")
    destinations = {}
    for vendor, adapter in adapter_classes().items():
        destinations[adapter.default_destination_name] = {
            "vendor": vendor,
            "base_url": f"{sandbox}/{adapter.sandbox_prefix}{adapter.sandbox_path}",
            **adapter.sandbox_options,
        }
    return {"relay": {}, "destinations": destinations, "_sandbox": True}


def settings_from_document(document: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Check a parsed configuration document and resolve its secrets from ``env``."""
    from worker.vendors import adapter_classes

    errors: dict[str, Any] = {}
    unknown = set(document) - {"relay", "destinations", "_sandbox"}
    for key in sorted(unknown):
        errors[key] = ["Unknown table; the file has [relay] and [destinations.<name>] tables."]
    try:
        relay = RelaySchema().load(document.get("relay", {}))
    except ValidationError as exc:
        errors["relay"] = exc.messages
        relay = {}
    redis_url = env.get("REDIS_URL") or relay.pop("redis_url", None)
    relay.pop("redis_url", None)
    if not redis_url and "relay" not in errors:
        # No silent default: a relay that guessed would write into whatever Redis runs there.
        errors["relay"] = {"redis_url": ["No Redis configured; set REDIS_URL or relay.redis_url."]}
    broker_url = env.get("CONVERSION_RELAY_BROKER_URL") or relay.pop("broker_url", None) or redis_url
    relay.pop("broker_url", None)

    sandbox = bool(document.get("_sandbox"))
    adapters = adapter_classes()
    destinations: dict[str, DestinationSettings] = {}
    raw_destinations = document.get("destinations", {})
    if not isinstance(raw_destinations, Mapping) or not raw_destinations:
        errors["destinations"] = ["Configure at least one [destinations.<name>] table."]
        raw_destinations = {}
    for name, table in raw_destinations.items():
        problem = _destination(name, table, adapters, env, sandbox, destinations)
        if problem:
            errors.setdefault("destinations", {})[name] = problem

    if errors:
        raise ConfigurationError("invalid configuration: " + format_messages(errors).split("\n", 1)[1].strip())
    settings = Settings(redis_url=str(redis_url), broker_url=str(broker_url), destinations=destinations, **relay)
    _check_timing(settings)
    return settings


def _destination(
    name: str,
    table: Any,
    adapters: Mapping[str, Any],
    env: Mapping[str, str],
    sandbox: bool,
    out: dict[str, DestinationSettings],
) -> Any:
    if not _NAME.fullmatch(name):
        return ["Destination names are 1-40 characters of a-z, 0-9, '_' or '-', starting with a letter."]
    if not isinstance(table, Mapping):
        return ["Expected a table."]
    vendor = table.get("vendor")
    adapter = adapters.get(vendor) if isinstance(vendor, str) else None
    if adapter is None:
        return {"vendor": [f"Unknown vendor {vendor!r}; use one of: {', '.join(sorted(adapters))}."]}
    try:
        data = adapter.settings_schema().load(table)
    except ValidationError as exc:
        return exc.messages
    base_keys = set(DestinationSchema().fields)
    options = {k: v for k, v in data.items() if k not in base_keys}
    key_env = data.get("api_key_env") or f"CONVERSION_RELAY_{name.upper().replace('-', '_')}_API_KEY"
    api_key = env.get(key_env) or (SANDBOX_API_KEY if sandbox else "")
    if not api_key and adapter.requires_api_key:
        return {"api_key_env": [f"Environment variable {key_env} is not set; export the API key in it."]}
    max_events = data.get("max_events", adapter.default_max_events)
    if max_events > adapter.max_events_limit:
        return {"max_events": [f"{max_events} is above the vendor's limit of {adapter.max_events_limit} per request."]}
    base_url = data.get("base_url") or adapter.base_url_for(options)
    if not base_url:
        return {"base_url": [adapter.base_url_hint]}
    out[name] = DestinationSettings(
        name=name,
        vendor=vendor,
        base_url=base_url.rstrip("/"),
        api_key=api_key,
        api_key_env=key_env,
        connect_timeout_seconds=data.get("connect_timeout_seconds", 3.05),
        read_timeout_seconds=data.get("read_timeout_seconds", 10.0),
        max_events=max_events,
        max_bytes=data.get("max_bytes", adapter.default_max_bytes),
        test_event_code=data.get("test_event_code") or None,
        enabled=data.get("enabled", True),
        rate_limit_per_second=data.get("rate_limit_per_second", adapter.default_rate_limit_per_second),
        rate_limit_key=data.get("rate_limit_key") or f"{vendor}:{hashlib.sha256(api_key.encode()).hexdigest()[:12]}",
        parallel_drains=data.get("parallel_drains", adapter.default_parallel_drains),
        skip_events=frozenset(data.get("skip_events", adapter.default_skip_events)),
        max_backlog_events=data.get("max_backlog_events", 1_000_000),
        options=options,
    )
    return None


def drain_hard_limit(settings: Settings) -> float:
    """The ``relay.drain`` task's hard time limit, a backstop only: a drain checks its budget
    before every request, so it ends at most one request (and the writes after it) past the
    budget; twice the longest request and ten seconds more are never reached."""
    longest = max((d.request_timeout_seconds for d in settings.destinations.values()), default=10.0)
    return settings.drain_budget_seconds + 2 * longest + 10.0


def _check_timing(settings: Settings) -> None:
    limit = drain_hard_limit(settings)
    if limit >= settings.visibility_timeout_seconds:
        raise ConfigurationError(
            f"relay.visibility_timeout_seconds: {settings.visibility_timeout_seconds} is not above the "
            f"{limit:.0f} s a drain task may run (drain_budget_seconds + 2 request timeouts + 10 s); the "
            "broker would hand a running drain out twice. Raise it or lower drain_budget_seconds."
        )
