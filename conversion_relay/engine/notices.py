"""Dead-letter notices: a webhook POST and a Sentry message, one per destination and reason an interval

At most one notice per ``notify_interval_seconds``, with counts and never an event.  Dead
letters written within an interval are counted and reported when it ends, by the next dead
letter or by the scheduler's :meth:`Notifier.flush`, whichever comes first.

The drain calls :meth:`Notifier.dead_lettered` after the transaction that wrote the letters, so
a notice never announces letters that were not stored.  Counting is best effort: a Redis error
or a webhook that is down costs a warning line (with the status only: the URL may be a
secret), never a delivery.  The POST runs in a thread of its own, so a slow receiver does not
hold the drain either.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import redis
import requests
import sentry_sdk

from conversion_relay.store.notices import Notice, NoticeCounts

if TYPE_CHECKING:
    from conversion_relay.config.settings import Settings
    from conversion_relay.store.keys import Keys

log = logging.getLogger("conversion_relay.notices")

#: Connect and read timeouts of the webhook: a notice is not worth a long wait.
TIMEOUT = (2.0, 3.0)


def notice_body(notice: Notice, relay: str) -> dict[str, Any]:
    """What the webhook receives: counts, times and names of things, nothing about people."""
    return {
        "destination": notice.destination,
        "reason": notice.reason,
        "count": notice.events,
        "letters": notice.letters,
        "since": notice.since,
        "until": notice.until,
        "relay": relay,
    }


def _in_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="relay-notice", daemon=True).start()


def _sentry_active() -> bool:
    return sentry_sdk.get_client().is_active()


class Notifier:
    """Counts dead letters and sends the notice whose gate opens.  ``spawn`` runs the POST
    (a thread by default; tests may run it in place)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        keys: Keys,
        *,
        spawn: Callable[[Callable[[], None]], None] = _in_thread,
        sentry_active: Callable[[], bool] = _sentry_active,
    ) -> None:
        self.settings = settings
        self.counts = NoticeCounts(client, keys)
        self.spawn = spawn
        self.sentry_active = sentry_active
        self.relay = socket.gethostname()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.notify_webhook_url) or (self.settings.notify_sentry and self.sentry_active())

    def dead_lettered(self, destination: str, tallies: Mapping[str, tuple[int, int]], now: float) -> None:
        """Count ``{reason: (events, letters)}`` just written; send what the gates let through."""
        if not tallies or not self.enabled:
            return
        for reason, (events, letters) in tallies.items():
            try:
                notice = self.counts.add(
                    destination, reason, events, letters, now, self.settings.notify_interval_seconds
                )
            except redis.RedisError as exc:
                log.warning("%s: dead letters not counted for a notice (%s)", destination, type(exc).__name__)
                return
            if notice is not None:
                self.send(notice)

    def flush(self, destinations: Iterable[str], now: float) -> None:
        """Send what waited for an interval to end (the scheduler calls this every few seconds)."""
        if not self.enabled:
            return
        for destination in destinations:
            try:
                notices = self.counts.flush(destination, now, self.settings.notify_interval_seconds)
            except redis.RedisError as exc:
                log.warning("%s: waiting dead-letter counts not read (%s)", destination, type(exc).__name__)
                return
            for notice in notices:
                self.send(notice)

    def send(self, notice: Notice) -> None:
        body = notice_body(notice, self.relay)
        if self.settings.notify_sentry and self.sentry_active():
            sentry_sdk.capture_message(
                f"conversion-relay: {notice.events} events dead-lettered at {notice.destination} ({notice.reason})",
                level="warning",
                tags={"destination": notice.destination, "reason": notice.reason},
                extras=body,
            )
        if self.settings.notify_webhook_url:
            self.spawn(lambda: self.post(body))

    def post(self, body: Mapping[str, Any]) -> None:
        """POST one notice; failures are logged by kind or status, never raised."""
        url = self.settings.notify_webhook_url
        if not url:
            return
        headers = {"Content-Type": "application/json"}
        if self.settings.notify_webhook_token:
            headers["Authorization"] = f"Bearer {self.settings.notify_webhook_token}"
        try:
            response = requests.post(url, json=body, headers=headers, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            log.warning("%s: dead-letter notice not sent (%s)", body["destination"], type(exc).__name__)
            return
        if not 200 <= response.status_code < 300:
            log.warning("%s: dead-letter notice refused (status %d)", body["destination"], response.status_code)
