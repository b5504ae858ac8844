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
refuses to start with every problem named by its key (``destinations.gravity.max_events: ...``)
instead of failing on the first event (the rules across keys are in :mod:`conversion_relay.config.rules`).
API keys are not needed to load: producers never send to a vendor, so they need no secrets;
the worker calls :func:`conversion_relay.config.rules.require_api_keys` at start-up.

There is no silent default: without ``CONVERSION_RELAY_CONFIG`` loading fails.  The reserved
value ``sandbox`` asks for the built-in configuration (:mod:`conversion_relay.config.source`), which points
every destination at the local vendor sandbox with the sandbox's key and keeps its data under
a key prefix of its own, so a demo can neither reach a real vendor nor mix with production data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from conversion_relay.config.rules import (
    base_url_problem,
    default_api_key_env,
    did_you_mean,
    limit_problems,
    load_table,
    notify_problems,
    relay_problems,
    resolve_urls,
)
from conversion_relay.config.source import SANDBOX_API_KEY, load_document
from conversion_relay.errors import ConfigurationError, format_messages
from conversion_relay.vendors import adapter_classes
from conversion_relay.vendors.destination import DestinationSchema, DestinationSettings

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


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
    #: Dead letters (they hold events, IP addresses included) are deleted this long after their
    #: last failure: 30 days.  0 keeps them until they are replayed or purged.
    dead_letter_ttl_seconds: float = 30 * 24 * 3600.0
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
    #: Where a notice goes when dead letters are written (JSON POST with counts, never events).
    notify_webhook_url: str | None = None
    #: The variable whose value the webhook gets as ``Authorization: Bearer ...`` (never logged).
    notify_webhook_token_env: str | None = None
    #: The token itself, resolved from the environment (not a ``[relay]`` key).
    notify_webhook_token: str = field(default="", repr=False)
    #: At most one notice per destination and reason this often (across all workers).
    notify_interval_seconds: float = 300.0
    #: Also send each notice to Sentry as a message, when the worker runs with Sentry.
    notify_sentry: bool = True
    #: ``plain`` (``key=value``) or ``json`` (one object a line) for the worker's log lines.
    log_format: str = "plain"
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
        keys = [d.api_key for d in self.destinations.values() if d.api_key]
        # A webhook URL often is its own credential (a secret path), as the token is.
        return keys + [s for s in (self.notify_webhook_token, self.notify_webhook_url) if s]


#: The ``[relay]`` keys that are settings (the URLs are resolved apart, with the environment).
_RELAY_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Settings)
    if f.name not in ("redis_url", "broker_url", "destinations", "notify_webhook_token")
)


def _positive(why: str) -> fields.Float:
    """A number of seconds that must be above 0, and the message saying why."""
    return fields.Float(validate=validate.Range(min=0.0, min_inclusive=False, error=f"Must be above 0 s: {why}."))


class RelaySchema(Schema):
    """The ``[relay]`` table."""

    class Meta:
        unknown = RAISE

    redis_url = fields.String()
    broker_url = fields.String()
    key_prefix = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,32}\Z"))
    flush_deadline_seconds = fields.Float(validate=validate.Range(min=0.0, max=60.0))
    retry_horizon_seconds = _positive("how long a failing batch is retried (default 86400, a day)")
    max_attempts = fields.Integer(validate=validate.Range(min=0))
    backoff_base_seconds = _positive("with 0, a failing batch would be retried at once, over and over")
    backoff_cap_seconds = _positive("the longest wait between two attempts (default 600)")
    max_retry_after_seconds = _positive("with 0, the relay would ignore every vendor's Retry-After")
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
    notify_webhook_url = fields.String(allow_none=True)
    notify_webhook_token_env = fields.String(
        allow_none=True, validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]*\Z", error="Name an environment variable.")
    )
    notify_interval_seconds = fields.Float(
        validate=validate.Range(min=1.0, max=86400.0, error="Use 1 to 86400 s between two notices (default 300).")
    )
    notify_sentry = fields.Boolean()
    log_format = fields.String(validate=validate.OneOf(("plain", "json"), error="Use plain or json."))

    @validates_schema(skip_on_field_errors=False)
    def _renamed(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "reclaim_idle_seconds" in data:
            raise ValidationError(
                "Renamed to lease_seconds: a dead drain's events are now taken over when its lease "
                "runs out (default 5 s), not after they sat idle; remove the key or rename it.",
                "reclaim_idle_seconds",
            )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Load and check the settings named by the environment.

    Args:
        environ: the environment to read; ``os.environ`` when omitted.

    Raises:
        ConfigurationError: naming each bad key and what to do about it.
    """
    env = os.environ if environ is None else environ
    document, sandbox = load_document(env)
    return settings_from_document(document, env, sandbox=sandbox)


def settings_from_document(document: Mapping[str, Any], env: Mapping[str, str], *, sandbox: bool = False) -> Settings:
    """Check a parsed configuration document and resolve its secrets from ``env``.

    Every problem of every table is collected before anything is raised.  ``sandbox``: the
    built-in configuration, whose destinations all use the sandbox's key.
    """
    errors: dict[str, Any] = {}
    for key in sorted(set(document) - {"relay", "destinations"}):
        errors[key] = [did_you_mean(key, ("relay", "destinations"), "the file", noun="table")]
    relay = load_table(RelaySchema(), document.get("relay", {}), "[relay]", errors, "relay")
    urls = resolve_urls(relay, env, errors)
    relay = {k: v for k, v in relay.items() if k in _RELAY_FIELDS}  # not a refused key's value

    adapters = adapter_classes()
    destinations: dict[str, DestinationSettings] = {}
    raw_destinations = document.get("destinations", {})
    if not isinstance(raw_destinations, Mapping) or not raw_destinations:
        errors["destinations"] = ["Configure at least one [destinations.<name>] table."]
        raw_destinations = {}
    for name, table in raw_destinations.items():
        problems = _destination(name, table, adapters, env, sandbox, destinations)
        if problems:
            errors.setdefault("destinations", {})[name] = problems

    for key, messages in notify_problems(relay, skip=errors.get("relay") or {}).items():
        errors.setdefault("relay", {}).setdefault(key, []).extend(messages)
    token_env = relay.get("notify_webhook_token_env")
    token = env.get(token_env, "") if token_env else ""
    settings = Settings(**urls, destinations=destinations, notify_webhook_token=token, **relay)
    reported = set(errors["relay"]) if isinstance(errors.get("relay"), dict) else set()
    values = {name: getattr(settings, name) for name in _RELAY_FIELDS}
    for key, messages in relay_problems(values, drain_time_limit(settings), skip=reported).items():
        errors.setdefault("relay", {}).setdefault(key, []).extend(messages)
    if errors:
        lines = format_messages(errors).split("\n  ")[1:]
        raise ConfigurationError("invalid configuration: " + "\n  ".join(lines), problems=lines)
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
    errors: dict[str, Any] = {}
    data = load_table(adapter.settings_schema(), table, f"a {vendor} destination", errors, "table")
    problems: dict[str, Any] = errors.get("table", {})
    base_keys = set(DestinationSchema().fields)
    options = {k: v for k, v in data.items() if k not in base_keys}
    key_env = data.get("api_key_env") or default_api_key_env(name)
    api_key = SANDBOX_API_KEY if sandbox else env.get(key_env, "")
    max_events = data.get("max_events", adapter.default_max_events)
    max_bytes = data.get("max_bytes", adapter.default_max_bytes)
    for key, messages in limit_problems(adapter, max_events, max_bytes).items():
        problems.setdefault(key, messages)
    base_url = data.get("base_url") or (None if "base_url" in problems else adapter.base_url_for(options))
    if not base_url and "base_url" not in problems:
        problems["base_url"] = [adapter.base_url_hint]
    elif base_url and (problem := base_url_problem(base_url)):
        problems["base_url"] = [problem]
    if problems:
        return problems
    out[name] = DestinationSettings(
        name=name,
        vendor=vendor,
        base_url=base_url.rstrip("/"),
        api_key=api_key,
        api_key_env=key_env,
        connect_timeout_seconds=data.get("connect_timeout_seconds", 3.05),
        read_timeout_seconds=data.get("read_timeout_seconds", 10.0),
        max_events=max_events,
        max_bytes=max_bytes,
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


def drain_time_limit(settings: Settings) -> int:
    """The whole seconds Celery is given as the drain task's ``time_limit``."""
    return int(drain_hard_limit(settings)) + 1
