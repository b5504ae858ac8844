"""Sentry for the web app that calls ``Relay.enqueue``: no plaintext personal data from the relay.

sentry-sdk records, by default, the local variables of every frame of an uncaught exception's
traceback: the caller's events, with their plaintext e-mail addresses, phone numbers and names,
sit in those variables.  The relay keeps them out of its own frames where it raises on purpose
(``EventValidationError`` and ``EnqueueError`` leave ``enqueue`` without a traceback into the
frames that held the events), but an unexpected error, or the app's own frames, can still carry
them.  Pass the hook to ``sentry_sdk.init``::

    import sentry_sdk
    from conversion_relay.sentry import before_send

    sentry_sdk.init(dsn=..., before_send=before_send)

    # with a hook of your own, run both:
    sentry_sdk.init(dsn=..., before_send=lambda event, hint: my_hook(before_send(event, hint), hint))

It drops the local variables of every frame in the relay's packages (``conversion_relay``,
``schemas``, ``worker``, ``tasks``) and replaces whatever looks like an e-mail address anywhere
in the event (messages, other frames' variables, breadcrumbs, extra data) by ``[redacted]``.
Phone numbers and names cannot be recognised in free text: keep them out of log messages.  The
relay's workers scrub harder, with :func:`conversion_relay.worker.observability.scrub_event`.
"""

from __future__ import annotations

from typing import Any

from conversion_relay.masking import REDACTED as MASK
from conversion_relay.schemas.pii import mask_emails

#: Packages whose frames lose their local variables.
RELAY_PACKAGES = frozenset({"conversion_relay"})


def scrub_event(event: dict[str, Any]) -> dict[str, Any]:
    """The Sentry event without the relay's frame variables and without e-mail addresses."""
    for container in ("exception", "threads"):
        for value in (event.get(container) or {}).get("values") or []:
            for frame in (value.get("stacktrace") or {}).get("frames") or []:
                if _in_relay(frame):
                    frame.pop("vars", None)
    return _masked(event)


def before_send(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """``sentry_sdk.init(before_send=...)``: :func:`scrub_event` on every error event."""
    return scrub_event(event)


def _in_relay(frame: dict[str, Any]) -> bool:
    module = frame.get("module") or ""
    return module.partition(".")[0] in RELAY_PACKAGES


def _masked(node: Any) -> Any:
    if isinstance(node, str):
        return mask_emails(node, MASK)
    if isinstance(node, dict):
        return {_masked(key) if isinstance(key, str) else key: _masked(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_masked(value) for value in node]
    return node
