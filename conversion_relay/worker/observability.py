"""Logs and Sentry without secrets or personal data.

Two guards, because either alone can be bypassed by a careless format string: a logging filter
that masks every configured secret in every record, and a Sentry ``before_send`` hook that drops
request bodies, task arguments and local variables (events live there) and masks secrets in
what remains.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from conversion_relay.masking import REDACTED

MASK = REDACTED


class SecretFilter(logging.Filter):
    """Replace configured secrets in log records by ``[redacted]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = mask(message, self.secrets)
        if masked != message or record.exc_info:
            record.msg, record.args = masked, None
            if record.exc_info:
                formatted = logging.Formatter().formatException(record.exc_info)
                record.msg = f"{masked}\n{mask(formatted, self.secrets)}"
                record.exc_info = None
                record.exc_text = None
        return True


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def install_log_filter(secrets: Iterable[str]) -> SecretFilter:
    """Attach the filter to every handler of the root logger (and Celery's)."""
    secret_filter = SecretFilter(secrets)
    for logger in (logging.getLogger(), logging.getLogger("celery")):
        for handler in logger.handlers:
            if not any(isinstance(f, SecretFilter) for f in handler.filters):
                handler.addFilter(secret_filter)
    return secret_filter


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the fields a record carries
    in ``relay_fields`` (the batch-outcome lines), so log pipelines need no parsing rules.

    It formats the message the secret filter already masked; the fields hold counts and names
    only."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "relay_fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def install_log_format(log_format: str) -> None:
    """``json``: every handler of the root logger (and Celery's) writes :class:`JsonFormatter`
    lines; ``plain`` keeps Celery's format (the batch lines are ``key=value`` already)."""
    if log_format != "json":
        return
    for logger in (logging.getLogger(), logging.getLogger("celery")):
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


def scrub_event(event: dict[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    """Remove what may hold events or keys from a Sentry event; mask secrets in the rest."""
    event.pop("request", None)
    extra = event.get("extra") or {}
    job = extra.get("celery-job")
    if isinstance(job, dict):
        job.pop("args", None)
        job.pop("kwargs", None)
    for exception in (event.get("exception") or {}).get("values", []):
        for frame in (exception.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    for crumb in (event.get("breadcrumbs") or {}).get("values", []):
        crumb.pop("data", None)
    return _mask_tree(event, sorted(set(secrets), key=len, reverse=True))


def scrub_breadcrumb(crumb: dict[str, Any], secrets: Iterable[str]) -> dict[str, Any] | None:
    """A breadcrumb with secrets masked; none for a Redis command.

    sentry-sdk's Redis integration (enabled by itself when redis-py is installed) records every
    command with its arguments: kombu's writes of task messages (``argsrepr`` and the body of a
    ``relay.enqueue`` call, with the plaintext a producer sent) and the relay's stored events."""
    if crumb.get("category") == "redis":
        return None
    return _mask_tree(crumb, sorted(set(secrets), key=len, reverse=True))


def _mask_tree(node: Any, secrets: list[str]) -> Any:
    if isinstance(node, str):
        return mask(node, secrets)
    if isinstance(node, dict):
        return {k: _mask_tree(v, secrets) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_tree(v, secrets) for v in node]
    return node


def init_sentry(secrets: Iterable[str], dsn: str | None = None, **options: Any) -> bool:
    """Start Sentry if a DSN is given (``SENTRY_DSN``); returns whether it was started."""
    dsn = dsn or os.environ.get("SENTRY_DSN")
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    known = list(secrets)
    sentry_sdk.init(
        dsn=dsn,
        max_request_body_size="never",
        integrations=[CeleryIntegration()],
        before_send=lambda event, hint: scrub_event(event, known),
        before_breadcrumb=lambda crumb, hint: scrub_breadcrumb(crumb, known),
        **_collect_nothing_personal(),
        **options,
    )
    return True


def _collect_nothing_personal() -> dict[str, Any]:
    """No user data, bodies, task arguments, frame variables or source lines (which may hold
    literals), in the option form this sentry-sdk understands."""
    import sentry_sdk.consts

    if "data_collection" in sentry_sdk.consts.ClientConstructor.__init__.__code__.co_varnames:
        return {
            "data_collection": {
                "user_info": False,
                "http_bodies": [],
                "queues": False,
                "stack_frame_variables": False,
                "frame_context_lines": 0,
            }
        }
    return {"send_default_pii": False, "include_local_variables": False, "include_source_context": False}
