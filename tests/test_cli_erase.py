"""``conversion-relay erase`` and ``check-config`` as an operator runs them, against the private
Redis: a dry run first, the person's events gone with ``--yes``, nobody else's touched, and no
personal value in anything printed."""

from __future__ import annotations

from conversion_relay.store.keys import Keys
from tests.conftest import gravity_destination
from tests.support import free_port
from tests.test_cli import run
from tests.test_erase import P_EMAIL, Q_EMAIL, purchase


def _unread(stack) -> int:
    return stack.redis.xlen(Keys(stack.settings.key_prefix).stream("gravity"))


def test_erase_is_a_dry_run_until_yes_and_removes_only_that_person(make_stack, sandbox):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    people = [purchase("p-1", email=P_EMAIL), purchase("p-2", email=P_EMAIL), purchase("q-1", email=Q_EMAIL)]
    stack.relay.enqueue(people)
    assert _unread(stack) == 3

    preview = run(stack.env, "erase", "--email", P_EMAIL.upper())
    assert preview.code == 0, preview.stderr
    assert preview.stdout.strip() == "Would erase 2 events (stream gravity 2). Run again with --yes to do it."
    assert _unread(stack) == 3

    done = run(stack.env, "erase", "--email", P_EMAIL, "--yes", "--origin", "dsr-118")
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "Erased 2 events (stream gravity 2)."
    assert _unread(stack) == 1
    assert P_EMAIL not in preview.stdout + preview.stderr + done.stdout + done.stderr

    again = run(stack.env, "erase", "--email", P_EMAIL, "--yes")
    assert again.code == 0 and again.stdout.strip() == "Nothing to erase: no stored event matches."


def test_erase_without_an_identifier_is_refused_before_redis(make_stack):
    result = run({**make_stack().env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/1"}, "erase", "--yes")
    assert result.code == 2
    assert result.error == "conversion-relay: erase needs --email, --phone or --external-id (any combination)."


def test_check_config_lists_every_problem_and_exits_2(make_stack, sandbox, tmp_path):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[relay]\nmax_attempt = 3\n[destinations.gravity]\nvendor = "gravity_capi"\nmax_events = 5000\n'
        'api_key_env = "NOT_SET_FOR_THIS_TEST"\n'
    )
    result = run({**stack.env, "CONVERSION_RELAY_CONFIG": str(bad)}, "check-config")
    assert result.code == 2
    assert "configuration: " + str(bad) in result.stdout
    assert result.error.startswith("conversion-relay: 3 problems: ")
    for part in ("did you mean max_attempts?", "destinations.gravity.max_events", "NOT_SET_FOR_THIS_TEST"):
        assert part in result.error and part in result.stdout


def test_check_config_pings_redis(make_stack, sandbox):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    result = run(stack.env, "check-config")
    assert result.code == 0, result.stdout + result.stderr
    assert "reachable" in result.stdout and "ok: a worker would start" in result.stdout
