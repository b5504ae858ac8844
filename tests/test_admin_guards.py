"""Guards on the destructive admin operations, shared by ``Admin``, the ``relay.admin`` task and
the command line: nonsense selections are refused with a message that names the field, an
unfiltered replay or purge needs an explicit "all", every operation writes one audit line without
event data, and a ``relay.admin`` result holds no event data beyond a short, documented time.

The task tests run through the module's real worker (``stack``), the others against a real Redis.
"""

from __future__ import annotations

import json
import logging

import pytest

from conversion_relay.ops.admin import RESULT_SECONDS, InvalidSelection, Selection
from conversion_relay.store.deadletter import DeadLetter
from tests.support import wait_for

IP = "198.51.100.77"
EMAIL = "guarded.person@example.com"


@pytest.mark.parametrize(
    ("kwargs", "field", "hint"),
    [
        ({"limit": 0}, "limit: 0 entries", "give 1 or more"),
        ({"limit": -3}, "limit: -3 entries", "give 1 or more"),
        ({"limit": True}, "limit:", "whole number"),
        ({"limit": 2.5}, "limit:", "whole number"),
        ({"limit": "5"}, "limit:", "whole number"),
        ({"since": 20.0, "until": 10.0}, "since: 20.0 is after until", "swap them"),
        ({"since": "yesterday"}, "since:", "UNIX seconds"),
        ({"ids": "3f2c"}, "ids:", "list of dead-letter ids"),
        ({"ids": ("",)}, "ids:", "non-empty"),
        ({"destination": ""}, "destination:", "leave it out"),
        ({"everything": "yes"}, "all:", "true or false"),
    ],
)
def test_a_nonsense_selection_is_refused_naming_the_field(kwargs, field, hint):
    with pytest.raises(InvalidSelection) as raised:
        Selection(**kwargs)
    assert str(raised.value).startswith(field) and hint in str(raised.value), str(raised.value)


def letter(n: int, destination: str = "gravity") -> DeadLetter:
    part = json.dumps({"event_name": "Purchase", "event_id": f"g-{n}", "user_data": {"client_ip_address": IP}})
    return DeadLetter(destination, "gravity_capi", "", [part], "http_400", 400, "", 1, 1000.0 + n, 1000.0 + n)


@pytest.fixture
def filled(make_stack):
    stack = make_stack()
    pipe = stack.redis.pipeline()
    for n in range(3):
        stack.admin.letters.add(pipe, letter(n))
    pipe.execute()
    return stack


@pytest.mark.parametrize("action", ["replay", "purge"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_an_unfiltered_replay_or_purge_needs_an_explicit_all(filled, action, dry_run):
    operation = getattr(filled.admin, action)
    with pytest.raises(InvalidSelection, match=rf"^{action}: no ids and no filter given; .* all=true \(--all\)"):
        operation(Selection(), dry_run=dry_run)
    assert filled.admin.letters.count() == 3 and filled.admin.waiting.count("gravity") == 0
    result = operation(Selection(everything=True), dry_run=dry_run)
    assert result["entries"] == 3 and result["done"] == (0 if dry_run else 3)


def test_a_limit_of_one_touches_one_entry_and_zero_is_refused(filled):
    with pytest.raises(InvalidSelection, match="^limit: 0 entries"):
        filled.admin.purge(Selection(destination="gravity", limit=0), dry_run=False)
    assert filled.admin.letters.count() == 3
    assert filled.admin.purge(Selection(destination="gravity", limit=1), dry_run=False)["done"] == 1
    assert filled.admin.letters.count() == 2


def audit_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "conversion_relay.audit"]


def test_every_destructive_operation_writes_one_audit_line_without_event_data(filled, caplog):
    caplog.set_level(logging.INFO, logger="conversion_relay.audit")
    filled.admin.replay(Selection(destination="gravity", reason="http_400"), origin="console:alice")
    filled.admin.purge(Selection(destination="gravity", limit=2), dry_run=False, origin="cli")
    filled.admin.erase(email=EMAIL, origin="api")
    filled.admin.erase(email=EMAIL, external_id="person-9", dry_run=False)
    records = audit_lines(caplog)
    assert [(r.levelno, r.getMessage().split(" ", 1)[0]) for r in records] == [
        (logging.INFO, "replay"),
        (logging.WARNING, "purge:"),
        (logging.INFO, "erase"),
        (logging.WARNING, "erase"),
    ]
    dry, purge, erase_dry, erase = (r.getMessage() for r in records)
    assert "would touch 3 dead letters (3 events)" in dry and "destination=gravity reason=http_400" in dry
    assert dry.endswith("origin: console:alice")
    assert "2 of 2 dead letters (2 events) done" in purge and "per destination: gravity 2" in purge
    assert "limit=2" in purge and purge.endswith("origin: cli")
    assert "(by email)" in erase_dry and erase_dry.endswith("origin: api")
    assert "(by email+external_id): removed 0 of 0" in erase
    from conversion_relay.schemas.pii import hash_email

    for message in (dry, purge, erase_dry, erase):
        for secret in (IP, "g-0", "g-1", EMAIL, hash_email(EMAIL), "person-9"):
            assert secret not in message, (secret, message)


# --- through the relay.admin task ----------------------------------------------------------------


def call(client, action: str, **kwargs):
    result = client.send_task("relay.admin", args=[action], kwargs=kwargs, queue="relay.admin")
    return result, result.get(timeout=30)


def refused(client, action: str, **kwargs) -> str:
    result = client.send_task("relay.admin", args=[action], kwargs=kwargs, queue="relay.admin")
    with pytest.raises(Exception) as raised:  # noqa: B017 - the task's error, rebuilt by Celery
        result.get(timeout=30)
    return str(raised.value)


def purchase(i: int) -> dict[str, object]:
    return {
        "event_name": "Purchase",
        "event_id": f"t-{i}",
        "user_data": {"client_ip_address": IP, "em": [EMAIL], "client_user_agent": "Agent/7.0 (guard)"},
        "custom_data": {"value": 1.0, "currency": "EUR"},
    }


def test_the_task_refuses_unfiltered_destructive_calls_and_nonsense_limits(stack, gravity, client):
    gravity.configure(statuses=[400, 400])
    stack.relay.enqueue([purchase(1)], destinations=["gravity"])
    wait_for(lambda: stack.dead_letters(), what="the first dead letter")
    stack.relay.enqueue([purchase(2)], destinations=["gravity"])
    wait_for(lambda: len(stack.dead_letters()) == 2, what="the second dead letter")
    stack.wait_settled()
    for action in ("purge", "replay"):
        message = refused(client, action, dry_run=False)
        assert f"{action}: no ids and no filter given" in message and "all=true" in message
    assert "limit: 0 entries" in refused(client, "purge", destination="gravity", limit=0, dry_run=False)
    assert "limit: -1 entries" in refused(client, "list", limit=-1)
    assert "give the person's email, phone or external_id" in refused(client, "erase", dry_run=False)
    assert "action: 'drop' is not one of" in refused(client, "drop")
    assert len(stack.dead_letters()) == 2

    _, dry = call(client, "purge", all=True)
    assert dry["dry_run"] is True and dry["entries"] == 2 and len(stack.dead_letters()) == 2
    _, one = call(client, "purge", destination="gravity", limit=1, dry_run=False, origin="ops-tool")
    assert one["done"] == 1 and len(stack.dead_letters()) == 1
    _, rest = call(client, "purge", all=True, dry_run=False)
    assert rest["done"] == 1 and stack.dead_letters() == []
    log = stack.workers[0].output()
    assert "origin: ops-tool" in log and "raised expected" in log


def test_task_results_hold_no_event_data_and_expire_quickly(stack, gravity, client):
    gravity.configure(statuses=[400])
    stack.relay.enqueue([purchase(3)], destinations=["gravity"])
    (dead,) = wait_for(lambda: stack.dead_letters(), what="the dead letter")
    stack.wait_settled()

    def stored(result) -> bytes:
        return stack.redis.get(f"celery-task-meta-{result.id}") or b""

    listed, rows = call(client, "list", destination="gravity")
    shown, brief = call(client, "show", id=dead.id)
    assert [row["id"] for row in rows["entries"]] == [dead.id] and rows["entries"][0]["events"] == 1
    assert brief["entry"]["reason"] == "http_400" and brief["entry"]["events"] == 1
    assert "group" not in brief["entry"] and "group" not in rows["entries"][0]
    for result in (listed, shown):
        assert stored(result), "the result is stored for the caller"
        for secret in (IP.encode(), b"t-3", b"Agent/7.0"):
            assert secret not in stored(result)
    full, entry = call(client, "show", id=dead.id, events=True)
    assert entry["entry"]["events"][0]["event_id"] == "t-3" and b"t-3" in stored(full)
    erased, report = call(client, "erase", email=EMAIL, dry_run=False, origin="dsr-42")
    assert report["removed"]["dead_letters"] == {"gravity": 1} and stack.dead_letters() == []
    assert EMAIL.encode() not in stored(erased)
    for result in (listed, shown, full, erased):
        ttl = stack.redis.pttl(f"celery-task-meta-{result.id}")
        assert 0 < ttl <= RESULT_SECONDS * 1000, ttl
    log = stack.workers[0].output()
    assert "<result not logged>" in log and "origin: dsr-42" in log
    for secret in (IP, "Agent/7.0", EMAIL):
        assert secret not in log, secret
