"""The ``conversion-relay`` command in process: help, version, one-line errors and the guards of
replay and purge, against the private Redis.

Each run goes through ``main`` (what the console script calls) inside click's CliRunner
isolation, which swaps standard input, output and error and the environment for the call.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

import conversion_relay
from conversion_relay.cli import main
from conversion_relay.store.deadletter import Selection
from tests.conftest import gravity_destination
from tests.support import free_port
from tests.test_deadletter import four_letters, letter

HELP_PATHS = [
    [],
    ["status"],
    ["check-config"],
    ["enqueue"],
    ["explain"],
    ["sandbox"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "export"],
    ["dlq", "replay"],
    ["dlq", "purge"],
    ["erase"],
]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The one line on stderr, failing the test if there are more."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        return lines[0]


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> Run:
    with CliRunner().isolation(input=stdin, env=env) as (out, err, _):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        return Run(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture
def filled(make_stack, sandbox):
    return four_letters(make_stack, sandbox)


@pytest.fixture
def unreachable(make_stack):
    """A stack's environment with Redis at a free port: any command that asks Redis gets exit 3."""
    stack = make_stack()
    return {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/1"}


# --- help and version -------------------------------------------------------------------------


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda p: " ".join(p) or "top")
def test_help_is_plain_text_with_an_example(make_stack, path):
    result = run(make_stack().env, *path, "--help")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"Usage: conversion-relay {' '.join(path)}".rstrip())
    assert "``" not in result.stdout and ":class:" not in result.stdout  # no reStructuredText
    assert "Example" in result.stdout
    assert "conversion-relay " + " ".join(path) in result.stdout.split("Example", 1)[1]


def test_the_top_help_says_that_worker_options_are_celerys(make_stack):
    result = run(make_stack().env, "--help")
    assert "worker" in result.stdout and "every option is Celery's" in result.stdout
    assert "--version" in result.stdout


def test_version_is_the_installed_distributions(make_stack):
    result = run(make_stack().env, "--version")
    assert result.code == 0, result.stderr
    assert result.stdout == f"conversion-relay {importlib.metadata.version('conversion-relay')}\n"
    assert result.stdout == f"conversion-relay {conversion_relay.__version__}\n"  # one version, one place


def test_every_option_and_command_is_explained():
    from conversion_relay.cli import cli

    def walk(command: click.Command, path: str) -> list[str]:
        missing = []
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{path} {param.opts[-1]}")
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                missing += walk(sub, f"{path} {name}")
                assert sub.help, f"{path} {name} has no help"
        return missing

    assert walk(cli, "conversion-relay") == []


# --- one line for every error -------------------------------------------------------------------


def test_enqueue_of_a_missing_file_is_one_line(make_stack, tmp_path):
    missing = tmp_path / "events.json"
    result = run(make_stack().env, "enqueue", str(missing))
    assert result.code == 2
    assert (
        result.error
        == f"conversion-relay: FILE: no file at {str(missing)!r}; check the path, or give - to read standard input."
    )


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_times_that_are_not_finite_are_refused(filled, option, value):
    stack, _ = filled
    result = run(stack.env, "dlq", "list", option, value)
    assert result.code == 2, result.stdout
    assert result.error.startswith(f"conversion-relay: Invalid value for '{option}': {value!r} is not a point in time;")
    assert "ISO 8601" in result.error and "(see 'conversion-relay dlq list --help')" in result.error
    assert result.stdout == ""


def test_a_time_range_that_selects_nothing_is_refused(filled):
    stack, _ = filled
    result = run(stack.env, "dlq", "purge", "--since", "3000", "--until", "1000", "--yes")
    assert result.code == 2, result.stdout
    assert result.error == (
        "conversion-relay: --since (1970-01-01 00:50:00 UTC) is after --until (1970-01-01 00:16:40 UTC); "
        "swap them, or drop one."
    )
    assert stack.admin.letters.count() == 4


def test_what_the_admin_layer_refuses_is_one_line_too(filled):
    """An empty id passes the options but not conversion_relay/store/selection.py's check of the selection."""
    stack, _ = filled
    result = run(stack.env, "dlq", "purge", "", "--yes")
    assert result.code == 2, result.stdout
    assert result.error.startswith("conversion-relay: ids: ")
    assert stack.admin.letters.count() == 4


def test_export_into_a_missing_folder_is_one_line_and_writes_nothing(filled, tmp_path):
    stack, _ = filled
    target = tmp_path / "no-such-folder" / "letters.jsonl"
    result = run(stack.env, "dlq", "export", "-o", str(target))
    assert result.code == 2
    assert result.error == (
        f"conversion-relay: -o/--output: the folder {str(target.parent)!r} does not exist; "
        "create it first, or write elsewhere."
    )
    assert not target.parent.exists()


def test_an_unknown_destination_is_named_with_the_configured_ones(filled):
    stack, letters = filled
    for args in (["dlq", "list"], ["dlq", "export"], ["dlq", "purge", "--yes"]):
        result = run(stack.env, *args, "--destination", "gravty")
        assert result.code == 2, (args, result.stdout)
        assert result.error == (
            "conversion-relay: --destination: 'gravty' is not configured (configured: gravity, other); "
            "check the spelling."
        )
    assert stack.admin.letters.count() == 4


def test_dead_letters_of_a_destination_no_longer_configured_can_still_be_listed(filled):
    stack, letters = filled
    pipe = stack.redis.pipeline()
    stack.admin.letters.add(pipe, letter(destination="retired", at=5000.0))
    pipe.execute()
    result = run(stack.env, "dlq", "list", "--destination", "retired")
    assert result.code == 0, result.stderr
    assert "retired" in result.stdout and letters[0].id not in result.stdout


def test_invalid_events_are_one_line_naming_each_field(make_stack, tmp_path):
    stack = make_stack()
    events = tmp_path / "events.json"
    bad = {"event_name": "Purchase", "user_data": {"em": ["a@example.com"]}, "custom_data": {"currency": "EURO"}}
    events.write_text(json.dumps([bad, {**bad, "event_time": "soon"}]))
    result = run(stack.env, "enqueue", str(events))
    assert result.code == 1
    assert result.error.startswith("conversion-relay: 3 invalid fields; nothing was enqueued; event 0: custom_data")
    assert "event 1: event_time" in result.error and "a@example.com" not in result.error
    assert stack.redis.xlen(stack.keys.stream("gravity")) == 0


def test_the_sandbox_on_a_port_in_use_is_one_line(make_stack, sandbox):
    result = run(make_stack().env, "sandbox", "--port", str(sandbox.port))
    assert result.code == 2
    assert result.error.startswith(f"conversion-relay: --port: cannot listen on 127.0.0.1:{sandbox.port} (")
    assert result.error.endswith("choose another port, or 0 for a free one.")


def test_an_unexpected_error_is_one_line_with_its_type_and_a_hint_to_debug():
    from conversion_relay.cli.base import RelayGroup

    @click.group(cls=RelayGroup)
    @click.option("--debug", is_flag=True)
    def group(debug: bool) -> None:
        pass

    @group.command()
    def boom() -> None:
        raise KeyError("customer@example.com")

    with CliRunner().isolation() as (out, err, _):
        code = group.main(["boom"], prog_name="conversion-relay", standalone_mode=False)
        line = err.getvalue().decode()
    assert code == 1
    assert line == (
        "conversion-relay: unexpected error (KeyError); run it again as 'conversion-relay --debug ...' "
        "to see the traceback, and report it.\n"
    )
    with pytest.raises(KeyError):
        group.main(["--debug", "boom"], prog_name="conversion-relay", standalone_mode=False)


# --- replay and purge guards --------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1"])
@pytest.mark.parametrize("action", ["purge", "replay"])
def test_a_limit_below_one_is_refused_and_nothing_is_touched(filled, action, limit):
    stack, _ = filled
    result = run(stack.env, "dlq", action, "--all", "--limit", limit, "--yes")
    assert result.code == 2, result.stdout
    assert result.error.startswith(
        f"conversion-relay: Invalid value for '--limit': {limit} is below 1; give 1 or more, or leave --limit out"
    )
    assert stack.admin.letters.count() == 4 and stack.admin.waiting.count("gravity") == 0


@pytest.mark.parametrize("action", ["purge", "replay"])
def test_replay_and_purge_without_a_selection_are_refused_before_redis_is_asked(unreachable, action):
    for args in ([], ["--yes"], ["--limit", "5", "--yes"]):
        result = run(unreachable, "dlq", action, *args)
        assert result.code == 2, (args, result.stderr)
        assert result.error == (
            f"conversion-relay: {action} needs a selection: give dead-letter ids, a filter (--destination, "
            "--reason, --since, --until), or --all for every entry."
        )


def test_ids_and_all_together_are_refused(filled):
    stack, letters = filled
    result = run(stack.env, "dlq", "purge", letters[0].id, "--all", "--yes")
    assert result.code == 2
    assert result.error == "conversion-relay: give dead-letter ids or --all, not both."
    assert stack.admin.letters.count() == 4


def test_purge_says_how_many_before_acting_and_acts_only_with_yes(filled):
    stack, letters = filled
    dry = run(stack.env, "dlq", "purge", "--reason", "http_400")
    assert dry.code == 0 and dry.stderr == ""
    assert dry.stdout == "Would purge 2 dead letters (5 events). Run again with --yes to do it.\n"
    assert stack.admin.letters.count() == 4
    done = run(stack.env, "dlq", "purge", "--reason", "http_400", "--yes")
    assert done.code == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Purging 2 dead letters (5 events)...",
        "Purged 2 of 2 dead letters (5 events).",
    ]
    assert [row["id"] for row in stack.admin.list(Selection())] == [letters[1].id, letters[3].id]


def test_replay_says_how_many_before_acting(filled):
    stack, letters = filled
    done = run(stack.env, "dlq", "replay", letters[0].id, "--yes")
    assert done.code == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Replaying 1 dead letters (2 events)...",
        "Replayed 1 of 1 dead letters (2 events).",
    ]
    assert stack.admin.waiting.count("gravity") == 1


# --- the other commands keep working ------------------------------------------------------------


def test_enqueue_from_standard_input_for_chosen_destinations(make_stack, sandbox):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox), "other": gravity_destination(sandbox)})
    event = {"event_name": "Purchase", "event_id": "cli-1", "user_data": {"em": ["a@example.com"]}}
    result = run(stack.env, "enqueue", "-", "--destination", "other", stdin=json.dumps(event))
    assert result.code == 0, result.stderr
    assert result.stdout == "Enqueued 1 events.\n"
    assert stack.redis.xlen(stack.keys.stream("other")) == 1
    assert stack.redis.xlen(stack.keys.stream("gravity")) == 0


def test_native_options_that_do_not_go_together_are_refused(make_stack, tmp_path):
    stack = make_stack()
    items = tmp_path / "items.json"
    items.write_text("[]")
    both = run(stack.env, "enqueue", str(items), "--native", "gravity", "--destination", "gravity")
    assert both.code == 2
    assert both.error == (
        "conversion-relay: --destination does not go with --native: a native payload is for its one destination."
    )
    lone = run(stack.env, "enqueue", str(items), "--operation", "addItems")
    assert lone.code == 2 and "--operation is for a native payload; add --native NAME" in lone.error


def test_check_config_lists_the_destinations_and_says_redis_is_out_of_reach(unreachable):
    result = run(unreachable, "check-config")
    assert result.code == 2
    assert "  gravity: gravity_capi at http://127.0.0.1:" in result.stdout
    assert result.error.startswith("conversion-relay: 1 problem: ") and "Redis" in result.error
