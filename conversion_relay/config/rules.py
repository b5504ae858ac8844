"""The rules a configuration must follow beyond each key's type and range.

:mod:`conversion_relay.config.settings` loads the file; this module holds the checks that need more than one key,
or more than a type: which URLs are safe to send events and keys to, what each vendor allows in
one request, and which timeouts must be longer than which.  Each rule returns problems as
``{key: [message, ...]}`` instead of raising, so the loader reports every problem of every
table at once: a relay refused at start-up should be fixed in one round, not one key per restart.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from marshmallow import ValidationError

from conversion_relay.errors import ConfigurationError
from conversion_relay.store.connection import redis_tls

if TYPE_CHECKING:
    from marshmallow import Schema

    from conversion_relay.config.settings import Settings
    from conversion_relay.vendors.destination import DestinationSettings

#: URL schemes of the relay's own Redis (the data; the broker may be another server).
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: Hosts that may be reached over plain HTTP: nothing leaves the machine.
LOOPBACK_NAMES = frozenset({"localhost"})

Problems = dict[str, list[str]]


def did_you_mean(key: str, known: Collection[str], where: str, *, noun: str = "key") -> str:
    """The message for an unknown key: the closest known one if one is close (a typo), else
    every key ``where`` takes."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"Unknown {noun} {key}; did you mean {close[0]}?"
    return f"Unknown {noun} {key}; {where} takes: {', '.join(sorted(known))}."


def load_table(schema: Schema, table: Any, where: str, errors: dict[str, Any], path: str) -> dict[str, Any]:
    """Load one table with ``schema``; its problems go to ``errors[path]`` (an unknown key with
    the known key it is closest to), and what did load is returned for the checks across keys."""
    try:
        return dict(schema.load(table))
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
        hidden = ("api_key", "reclaim_idle_seconds")  # refused keys, never suggested
        known = [n for n, f in schema.fields.items() if not f.dump_only and n not in hidden]
        for key, value in messages.items():
            if value == ["Unknown field."]:
                messages[key] = [did_you_mean(str(key), known, where)]
        errors[path] = messages
        valid = exc.valid_data
        return dict(valid) if isinstance(valid, Mapping) else {}


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None.  The message never repeats the URL: it may carry
    a password."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "The port or address is not valid; use redis://host:6379/0."
    scheme = parts.scheme.lower()
    if "://" not in url or not scheme:
        return "Not a URL; use redis://host:6379/0, rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock."
    if scheme not in REDIS_SCHEMES:
        return f"Scheme {scheme}:// is not one of redis://, rediss:// or unix://; use redis://host:6379/0."
    if scheme == "unix":
        return None if parts.path else "A unix:// URL needs the socket's path: unix:///path/to/redis.sock."
    if not parts.hostname:
        return f"No host; use {scheme}://host:{port or 6379}/0."
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return f"The database /{database} is not a number; use /0 to /15 after the host and port."
    return _tls_problem(url) if scheme == "rediss" or "ssl_" in parts.query else None


def _tls_problem(url: str) -> str | None:
    """The TLS options of the URL as the worker will read them, checked at load time already."""
    try:
        redis_tls(url, "url")
    except ConfigurationError as exc:
        return str(exc).removeprefix("url: ")
    return None


def resolve_urls(relay: dict[str, Any], env: Mapping[str, str], errors: dict[str, Any]) -> dict[str, str]:
    """The Redis and broker URLs, taken out of the ``[relay]`` values: the environment wins over
    the file.  No silent default: a relay that guessed would write into whatever Redis runs there."""
    file_url = relay.pop("redis_url", None)
    redis_url = env.get("REDIS_URL") or file_url
    broker_url = env.get("CONVERSION_RELAY_BROKER_URL") or relay.pop("broker_url", None) or redis_url
    relay.pop("broker_url", None)
    problem = "No Redis configured; set REDIS_URL or relay.redis_url." if not redis_url else None
    if redis_url and (problem := redis_url_problem(redis_url)) and env.get("REDIS_URL"):
        problem = f"REDIS_URL (which overrides relay.redis_url): {problem}"
    if problem and "redis_url" not in (errors.get("relay") or {}):
        errors.setdefault("relay", {})
        if isinstance(errors["relay"], dict):
            errors["relay"]["redis_url"] = [problem]
    return {"redis_url": str(redis_url or ""), "broker_url": str(broker_url or "")}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``: addresses that never leave the machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url_problem(url: str) -> str | None:
    """Refuse a vendor URL that would send keys and personal data in the clear or leak them.

    Plain HTTP is allowed to loopback hosts only (the sandbox, tests).  Credentials and query
    strings have no place in it: the key goes in a header, and the adapters append paths.
    """
    parts, problem = _url_parts(url)
    if parts is None:
        return problem
    if parts.username or parts.password:
        return "Credentials do not belong in the URL (proxies and servers log URLs); put the key in api_key_env."
    if parts.query or parts.fragment:
        return "Remove the query string or fragment: the relay appends the vendor's paths to base_url."
    return _cleartext_problem(parts, "the API key and personal data")


def webhook_url_problem(url: str) -> str | None:
    """Refuse a notification webhook that would travel in the clear or carry credentials in
    the URL.  The message never repeats the URL: its path is often the webhook's secret."""
    parts, problem = _url_parts(url)
    if parts is None:
        return problem
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Not an http(s) URL; use https://hooks.example.com/relay."
    if parts.username or parts.password:
        return "Credentials do not belong in the URL; put a token in notify_webhook_token_env."
    return _cleartext_problem(parts, "notices")


def _url_parts(url: str) -> tuple[SplitResult | None, str | None]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        return None, "The host or port is not valid."
    return parts, None


def _cleartext_problem(parts: SplitResult, carries: str) -> str | None:
    host = parts.hostname or ""
    if parts.scheme == "http" and not is_loopback(host):
        return (
            f"http:// to {host} would send {carries} unencrypted; use https:// "
            "(plain http is accepted for loopback hosts only: 127.0.0.0/8, ::1, localhost)."
        )
    return None


def notify_problems(relay: Mapping[str, Any], skip: Collection[str] = ()) -> Problems:
    """The notification keys that are valid alone but not together (``skip``: keys already
    reported)."""
    problems: Problems = {}
    url = relay.get("notify_webhook_url")
    if url and "notify_webhook_url" not in skip and (problem := webhook_url_problem(url)):
        problems["notify_webhook_url"] = [problem]
    if relay.get("notify_webhook_token_env") and not url and "notify_webhook_url" not in skip:
        problems["notify_webhook_token_env"] = [
            "Names a token but no notify_webhook_url is set; set the URL or remove the key."
        ]
    return problems


def notify_token_problem(settings: Settings) -> str | None:
    """Why a worker cannot authenticate its notices: the token's variable is unset."""
    name = settings.notify_webhook_token_env
    if settings.notify_webhook_url and name and not settings.notify_webhook_token:
        return (
            f"relay.notify_webhook_token_env: Environment variable {name} is not set; "
            "export the webhook's token in it before starting the worker."
        )
    return None


def limit_problems(adapter: Any, max_events: int | None, max_bytes: int | None) -> Problems:
    """``max_events`` and ``max_bytes`` against what one request of the vendor may carry.

    Where the vendor documents a limit, it is a hard cap; where it documents none, the adapter's
    cap is the relay's assumption, and the message says so.
    """
    problems: Problems = {}
    for key, value, cap, documented, unit in (
        ("max_events", max_events, adapter.max_events_limit, adapter.max_events_documented, "events"),
        ("max_bytes", max_bytes, adapter.max_bytes_limit, adapter.max_bytes_documented, "bytes"),
    ):
        if value is None or value <= cap:
            continue
        if documented:
            why = f"the vendor's documented limit of {cap:,} {unit} per request"
        else:
            why = (
                f"{cap:,} {unit}, the relay's cap for {adapter.title}: the vendor documents no limit "
                f"(docs/vendors/{adapter.vendor}.md)"
            )
        problems[key] = [f"{value:,} is above {why}; set {key} to {cap:,} or less."]
    return problems


def relay_problems(values: Mapping[str, Any], task_time_limit: int, skip: Collection[str] = ()) -> Problems:
    """Engine values that are valid alone but break something together.

    ``task_time_limit``: the drain task's hard time limit (whole seconds).  ``skip``: keys
    already reported (their value here is the default; a second message would mislead).
    """
    problems: Problems = {}

    def check(key: str, other: str, broken: bool, message: str) -> None:
        if broken and key not in skip and other not in skip:
            problems.setdefault(key, []).append(message)

    base, cap = values["backoff_base_seconds"], values["backoff_cap_seconds"]
    check(
        "backoff_cap_seconds",
        "backoff_base_seconds",
        cap < base,
        f"{cap} is below backoff_base_seconds ({base}): the first retry would already wait longer "
        "than the cap allows. Raise backoff_cap_seconds or lower backoff_base_seconds.",
    )
    flush, budget = values["flush_deadline_seconds"], values["drain_budget_seconds"]
    check(
        "flush_deadline_seconds",
        "drain_budget_seconds",
        flush >= budget,
        f"{flush} is not below drain_budget_seconds ({budget}): a partial batch would never leave at "
        "its deadline, only be parked when each drain ends. Lower it or raise drain_budget_seconds.",
    )
    dedup, timeout = values["enqueue_dedup_seconds"], values["enqueue_timeout_seconds"]
    check(
        "enqueue_dedup_seconds",
        "enqueue_timeout_seconds",
        0 < dedup <= timeout,
        f"{dedup} is not above enqueue_timeout_seconds ({timeout}): a producer retrying after a timeout "
        "would come after the call was forgotten and store it twice. Raise it, or set 0 to turn it off.",
    )
    # The broker hands an unacknowledged drain message out again after the visibility timeout
    # (whole seconds, as Celery passes it on): it must outlast the drain task's hard time limit.
    visibility = values["visibility_timeout_seconds"]
    check(
        "visibility_timeout_seconds",
        "drain_budget_seconds",
        int(visibility) <= task_time_limit,
        f"{visibility} is not above the {task_time_limit} s a drain task may run (its hard time limit: "
        "drain_budget_seconds + 2 request timeouts + 10 s); the broker would hand a running drain out "
        f"twice. Raise it above {task_time_limit} or lower drain_budget_seconds.",
    )
    return problems


def default_api_key_env(name: str) -> str:
    """The variable holding a destination's key when its table names none."""
    return f"CONVERSION_RELAY_{name.upper().replace('-', '_')}_API_KEY"


def missing_key_message(name: str, key_env: str) -> str:
    """The problem of a destination whose key variable is not set (never a key's value)."""
    return (
        f"destinations.{name}.api_key_env: Environment variable {key_env} is not set; "
        "export the destination's API key in it before starting the worker."
    )


def api_key_problem(destination: DestinationSettings) -> str | None:
    """Why ``destination`` cannot send: the variable holding its key is unset."""
    if destination.api_key:
        return None
    return missing_key_message(destination.name, destination.api_key_env)


def require_api_key(destination: DestinationSettings) -> None:
    """Refuse to build a sender for a destination without its key.

    Raises:
        ConfigurationError: naming the variable (never a key's value).
    """
    problem = api_key_problem(destination)
    if problem:
        raise ConfigurationError(problem)


def missing_api_keys(settings: Settings) -> list[str]:
    """One problem per enabled destination whose key is missing (disabled ones are never
    drained).  Producers need no keys; workers and ``check-config`` do."""
    return [p for d in settings.enabled_destinations if (p := api_key_problem(d))]


def missing_secrets(settings: Settings) -> list[str]:
    """What a worker would miss: every enabled destination's key, and the webhook token the
    configuration names.  ``check-config`` reports the same as the worker refuses."""
    lines = missing_api_keys(settings)
    if problem := notify_token_problem(settings):
        lines.append(problem)
    return lines


def require_api_keys(settings: Settings) -> None:
    """Refuse to start a worker without every key its enabled destinations send with.

    Raises:
        ConfigurationError: naming every missing variable at once (never a key's value).
    """
    lines = missing_secrets(settings)
    if lines:
        raise ConfigurationError("missing API keys: " + "\n  ".join(lines), problems=lines)
