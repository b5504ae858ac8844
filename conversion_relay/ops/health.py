"""``conversion-relay health``: is the relay alive, and is it ready to deliver.

Two questions with their own exit statuses, so a supervisor can restart what is dead and a
load balancer or an alert can hold back what is merely not ready:

* **live** (:data:`EXIT_NOT_LIVE` when not): Redis answers.  Nothing works without it.
* **ready** (:data:`EXIT_NOT_READY` when not): besides, Redis never evicts keys (an evicting
  Redis deletes stored events), at least one worker's heartbeat is current, and no enabled
  destination is stalled -- events older than the threshold wait and the vendor has taken
  nothing for as long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from conversion_relay.errors import ConfigurationError
from conversion_relay.ops.admin import oldest_undelivered_age, redis_time
from conversion_relay.store import stats
from conversion_relay.store.keys import Keys
from conversion_relay.store.memory import MemoryGuard
from conversion_relay.store.workers import alive

if TYPE_CHECKING:
    from conversion_relay.config.settings import Settings

#: Exit statuses of ``conversion-relay health``.
EXIT_HEALTHY = 0
EXIT_NOT_LIVE = 3
EXIT_NOT_READY = 4
#: A destination with events older than this, and no success for as long, is stalled.
DEFAULT_STALL_SECONDS = 600.0


@dataclass
class Health:
    live: bool
    ready: bool
    problems: list[str] = field(default_factory=list)
    workers: int = 0

    def exit_code(self, *, ready: bool) -> int:
        """The exit status for the question asked: live only, or ready too."""
        if not self.live:
            return EXIT_NOT_LIVE
        if ready and not self.ready:
            return EXIT_NOT_READY
        return EXIT_HEALTHY


def check(settings: Settings, client: redis.Redis, *, stall_seconds: float = DEFAULT_STALL_SECONDS) -> Health:
    """Every check, with each problem named and what to do about it."""
    try:
        client.ping()
    except redis.RedisError as exc:
        return Health(
            live=False, ready=False, problems=[f"Redis is out of reach ({type(exc).__name__}); check REDIS_URL."]
        )
    keys = Keys(settings.key_prefix)
    problems: list[str] = []
    try:
        now = redis_time(client)
        try:
            MemoryGuard(client, settings).check_policy()
        except ConfigurationError as exc:
            problems.append(str(exc))
        workers = len(alive(client, keys, now))
        if not workers:
            problems.append(
                "no worker heartbeat: no worker's scheduler ran in the last few ticks; "
                "start one (conversion-relay worker) or look at its log."
            )
        for dest in settings.enabled_destinations:
            problem = _stalled(client, keys, settings, dest.name, now, stall_seconds)
            if problem:
                problems.append(problem)
    except redis.RedisError as exc:
        return Health(
            live=False, ready=False, problems=[f"Redis failed a check ({type(exc).__name__}); check REDIS_URL."]
        )
    return Health(live=True, ready=not problems, problems=problems, workers=workers)


def _stalled(
    client: redis.Redis, keys: Keys, settings: Settings, name: str, now: float, stall_seconds: float
) -> str | None:
    age = oldest_undelivered_age(client, keys, settings, name, now)
    if age <= stall_seconds:
        return None
    last = stats.observed(client, keys, name)[stats.LAST_SUCCESS]
    if last is not None and now - last <= stall_seconds:
        return None
    since = "never" if last is None else f"{now - last:.0f} s ago"
    return (
        f"destination {name} is stalled: its oldest event waits for {age:.0f} s and the vendor last took a "
        f"request {since}; see conversion-relay status and the worker log."
    )
