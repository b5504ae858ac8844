"""The dead-letter store and its command line, against a real private Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conversion_relay.store.deadletter import DeadLetter, Selection


def letter(destination="gravity", reason="http_400", at=1000.0, events=2, status=400):
    parts = [json.dumps({"event_name": "Purchase", "event_id": f"{reason}-{at}-{n}"}) for n in range(events)]
    return DeadLetter(
        destination=destination,
        vendor="gravity_capi",
        group="",
        parts=parts,
        reason=reason,
        status=status,
        excerpt='{"error":"bad"}',
        attempts=1,
        first_failed_at=at - 5,
        last_failed_at=at,
    )


def four_letters(make_stack, sandbox):
    """Two configured destinations and four dead letters (two of them http_400, 5 events)."""
    from tests.conftest import gravity_destination

    stack = make_stack(destinations={"gravity": gravity_destination(sandbox), "other": gravity_destination(sandbox)})
    letters = [
        letter(at=1000.0),
        letter(reason="retries_exhausted", at=2000.0, status=503),
        letter(destination="other", at=3000.0, events=3),
        letter(reason="vendor_rejected_event", at=4000.0, events=1, status=200),
    ]
    pipe = stack.redis.pipeline()
    for item in letters:
        stack.admin.letters.add(pipe, item)
    pipe.execute()
    return stack, letters


@pytest.fixture
def filled(make_stack, sandbox):
    return four_letters(make_stack, sandbox)


def ids(rows):
    return [row["id"] for row in rows]


def test_filters_by_destination_reason_and_time(filled):
    stack, letters = filled
    admin = stack.admin
    assert ids(admin.list(Selection())) == [x.id for x in letters]
    assert ids(admin.list(Selection(destination="other"))) == [letters[2].id]
    assert ids(admin.list(Selection(reason="http_400"))) == [letters[0].id, letters[2].id]
    assert ids(admin.list(Selection(since=1500, until=3500))) == [letters[1].id, letters[2].id]
    assert ids(admin.list(Selection(limit=2))) == [letters[0].id, letters[1].id]
    assert admin.list(Selection(ids=(letters[3].id,)))[0]["events"] == 1


def test_show_and_export_give_the_events_and_the_reason(filled, tmp_path):
    stack, letters = filled
    shown = stack.admin.show(letters[2].id)
    assert shown["reason"] == "http_400" and shown["status"] == 400
    assert len(shown["events"]) == 3 and shown["events"][0]["event_name"] == "Purchase"
    assert stack.admin.show("missing") is None
    with open(tmp_path / "out.jsonl", "w") as out:
        assert stack.admin.export(Selection(destination="gravity"), out) == 3
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [letters[0].id, letters[1].id, letters[3].id]
    assert lines[0]["first_failed_at"] == 995.0 and lines[0]["attempts"] == 1


def test_replay_is_a_dry_run_first_then_moves_entries_to_waiting_batches(filled):
    stack, letters = filled
    dry = stack.admin.replay(Selection(destination="gravity"))
    assert dry == {
        "dry_run": True,
        "entries": 3,
        "events": 5,
        "done": 0,
        "ids": [letters[0].id, letters[1].id, letters[3].id],
    }
    assert stack.admin.letters.count() == 4
    done = stack.admin.replay(Selection(destination="gravity"), dry_run=False)
    assert done["done"] == 3
    assert stack.admin.letters.count() == 1
    waiting = stack.admin.waiting.list("gravity")
    assert sorted(len(b.parts) for b in waiting) == [1, 2, 2]
    assert all(b.attempts == 0 and b.last_reason == "replayed" for b in waiting)
    again = stack.admin.replay(Selection(ids=(letters[0].id,)), dry_run=False)
    assert again["entries"] == 0


def test_replay_of_an_entry_already_gone_is_refused(filled):
    stack, letters = filled
    assert stack.admin.letters.replay(letters[0]) is not None
    assert stack.admin.letters.replay(letters[0]) is None


def test_purge_removes_only_what_matches(filled):
    stack, letters = filled
    assert stack.admin.purge(Selection(reason="http_400"))["done"] == 0
    result = stack.admin.purge(Selection(reason="http_400"), dry_run=False)
    assert result["done"] == 2
    assert ids(stack.admin.list(Selection())) == [letters[1].id, letters[3].id]
    assert stack.admin.letters.count("other") == 0


def test_pages_stay_correct_while_entries_are_replayed(make_stack):
    stack = make_stack()
    pipe = stack.redis.pipeline()
    for n in range(450):
        stack.admin.letters.add(pipe, letter(at=1000.0 + n, events=1))
    pipe.execute()
    result = stack.admin.replay(Selection(destination="gravity"), dry_run=False)
    assert result["entries"] == result["done"] == 450
    assert stack.admin.letters.count() == 0
    assert stack.admin.waiting.count("gravity") == 450


def cli(stack, *args):
    return subprocess.run(
        [sys.executable, "-m", "conversion_relay.cli", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_lists_shows_exports_replays_and_purges(filled, tmp_path):
    stack, letters = filled
    listed = cli(stack, "dlq", "list", "--destination", "gravity")
    assert listed.returncode == 0, listed.stderr
    assert letters[0].id in listed.stdout and letters[2].id not in listed.stdout
    shown = cli(stack, "dlq", "show", letters[1].id)
    assert json.loads(shown.stdout)["reason"] == "retries_exhausted"
    assert cli(stack, "dlq", "show", "nope").returncode == 1
    out = tmp_path / "dlq.jsonl"
    exported = cli(stack, "dlq", "export", "--reason", "http_400", "-o", str(out))
    assert exported.returncode == 0 and len(out.read_text().splitlines()) == 2

    refused = cli(stack, "dlq", "replay")
    assert refused.returncode == 2 and "--all" in refused.stderr
    dry = cli(stack, "dlq", "replay", "--all")
    assert "Would replay 4 dead letters (8 events)" in dry.stdout
    assert stack.admin.letters.count() == 4
    done = cli(stack, "dlq", "replay", letters[0].id, "--yes")
    assert "Replayed 1 of 1 dead letters (2 events)" in done.stdout
    purged = cli(stack, "dlq", "purge", "--since", "2500", "--yes")
    assert "Purged 2 of 2" in purged.stdout
    misspelt = cli(stack, "dlq", "purge", "--reason", "no_such_reason", "--yes")
    assert misspelt.returncode == 2 and "'no_such_reason' is not a dead-letter reason" in misspelt.stderr
    assert "too_large" in misspelt.stderr and "http_<status>" in misspelt.stderr
    nothing = cli(stack, "dlq", "purge", "--reason", "mapping_error", "--yes")
    assert nothing.returncode == 0 and "Nothing to do" in nothing.stdout
    assert stack.admin.letters.count() == 1


def test_cli_status_shows_counters_and_waiting_batches(filled):
    stack, letters = filled
    stack.admin.replay(Selection(ids=(letters[0].id,)), dry_run=False)
    shown = cli(stack, "status")
    assert shown.returncode == 0, shown.stderr
    assert "gravity (gravity_capi)" in shown.stdout
    assert "1 waiting batches" in shown.stdout and "attempt 0" in shown.stdout
    as_json = json.loads(cli(stack, "status", "--json").stdout)
    assert as_json["gravity"]["dead_letters"] == 2
    assert as_json["other"]["dead_letters"] == 1


def test_cli_reports_a_bad_configuration_by_key(make_stack, tmp_path):
    stack = make_stack()
    bad = tmp_path / "bad.toml"
    bad.write_text('[relay]\nflush_deadline_seconds = "soon"\n[destinations.gravity]\nvendor = "gravity_capi"\n')
    result = subprocess.run(
        [sys.executable, "-m", "conversion_relay.cli", "check-config"],
        env={**stack.env, "CONVERSION_RELAY_CONFIG": str(bad)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "relay.flush_deadline_seconds" in result.stderr
