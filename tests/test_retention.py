"""Dead letters are deleted ``dead_letter_ttl_seconds`` after their last failure (30 days by
default), entry and index members alike, by the scheduler's housekeeping -- against a real Redis,
with letters made by real drains and the real scheduler run with a clock the test sets."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from conversion_relay.config.settings import Settings, settings_from_document
from conversion_relay.engine.drain import Drainer
from conversion_relay.engine.runtime import Runtime
from conversion_relay.engine.scheduler import Scheduler
from conversion_relay.store.keys import GROUP
from conversion_relay.store.lease import Leases
from tests.fakes import FakeClock
from tests.support import UNUSED_REDIS

THIRTY_DAYS = 30 * 24 * 3600


def test_dead_letters_are_kept_30_days_by_default_and_0_still_keeps_them():
    assert Settings(redis_url=UNUSED_REDIS, broker_url=UNUSED_REDIS).dead_letter_ttl_seconds == THIRTY_DAYS
    env = {"REDIS_URL": UNUSED_REDIS, "GRAVITY_API_KEY": "k"}
    table = {"gravity": {"vendor": "gravity_capi"}}
    assert settings_from_document({"destinations": table}, env).dead_letter_ttl_seconds == THIRTY_DAYS
    forever = settings_from_document({"relay": {"dead_letter_ttl_seconds": 0}, "destinations": table}, env)
    assert forever.dead_letter_ttl_seconds == 0


def purchase(event_id: str) -> dict[str, object]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "user_data": {"client_ip_address": "203.0.113.9", "external_id": [f"user-{event_id}"]},
        "custom_data": {"value": 5.0, "currency": "EUR"},
    }


def dead_letter(stack, gravity, event_id: str) -> Any:
    """A real dead letter: the sandbox refuses the request, a real drain records it."""
    gravity.configure(statuses=[400])
    stack.relay.enqueue([purchase(event_id)], destinations=["gravity"])
    rt = Runtime(stack.settings)
    token = uuid.uuid4().hex
    assert Leases(rt.redis, rt.keys).acquire("gravity", 0, token, 10.0)
    Drainer(rt, "gravity", token).run()
    (letter,) = [x for x in stack.dead_letters() if event_id in x.parts[0]]
    return letter


def indexed(stack, entry_id: str) -> tuple[bool, bool, bool]:
    """Whether the entry's hash, its member of the index of all and of its destination exist."""
    return (
        bool(stack.redis.exists(stack.keys.dlq_entry(entry_id))),
        stack.redis.zscore(stack.keys.dlq, entry_id) is not None,
        stack.redis.zscore(stack.keys.dlq_for("gravity"), entry_id) is not None,
    )


def test_housekeeping_deletes_letters_past_the_ttl_with_their_index_members(make_stack, gravity):
    ttl = 0.5
    stack = make_stack(relay={"dead_letter_ttl_seconds": ttl})
    stack.redis.xgroup_create(stack.keys.stream("gravity"), GROUP, id="0", mkstream=True)
    old = dead_letter(stack, gravity, "old-1")
    time.sleep(1.0)
    recent = dead_letter(stack, gravity, "recent-1")
    assert recent.last_failed_at - old.last_failed_at > 2 * ttl
    # An index member whose entry is gone (deleted by hand, say) still names an old failure.
    stack.redis.zadd(stack.keys.dlq, {"orphan": old.last_failed_at})
    stack.redis.zadd(stack.keys.dlq_for("gravity"), {"orphan": old.last_failed_at})
    assert indexed(stack, old.id) == indexed(stack, recent.id) == (True, True, True)
    # Housekeeping runs at the scheduler's first tick: half a TTL after the recent letter.
    now = FakeClock(recent.last_failed_at + ttl / 2)

    started: list[str] = []
    kept = Scheduler(
        dataclasses.replace(stack.settings, dead_letter_ttl_seconds=0), lambda d, t, k: started.append(d), clock=now
    )
    kept.run_once()
    assert indexed(stack, old.id) == (True, True, True), "a TTL of 0 must keep every letter"

    time.sleep(0.1)  # the tick key of the first scheduler's tick runs out
    Scheduler(stack.settings, lambda d, t, k: started.append(d), clock=now).run_once()
    assert indexed(stack, old.id) == (False, False, False)
    assert indexed(stack, recent.id) == (True, True, True)
    assert stack.redis.zscore(stack.keys.dlq, "orphan") is None
    assert [x.id for x in stack.dead_letters()] == [recent.id]
    # Old members of the destinations' own indexes go too, when prune is told the destinations.
    assert stack.admin.letters.prune(now() - ttl, ["gravity"]) == 0
    assert stack.redis.zscore(stack.keys.dlq_for("gravity"), "orphan") is None
    assert indexed(stack, recent.id) == (True, True, True)
