"""Progress bars of the long commands: drawn for a person at a terminal, never into a pipe.

Each command runs as its own process, as an operator runs it: once with standard output and
error on a pseudo-terminal (a bar appears), once with both piped (exactly the lines the command
printed before bars existed, and nothing on standard error).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios

import pytest

from conversion_relay.store.keys import Keys
from tests.conftest import gravity_destination
from tests.test_deadletter import letter
from tests.test_erase import P_EMAIL, Q_EMAIL, purchase

LETTERS = 300
#: What tqdm draws and nothing else prints: ``42%|████`` with a total, ``12.3letter/s`` always.
BAR = re.compile(r"\d+%\|")
RATE = re.compile(r"(letter|entry)/s")
COMMAND = [sys.executable, "-m", "conversion_relay.cli"]


def at_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the command with standard output and error on one pseudo-terminal, 100 columns wide;
    return its exit status and everything it wrote there."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen(
        [*COMMAND, *args], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env, close_fds=True
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError as exc:  # Linux ends a pseudo-terminal whose other side closed with EIO
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def piped(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def many(make_stack, sandbox):
    """A stack with LETTERS dead letters of gravity (two events each) and the environment of its commands."""
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    pipe = stack.redis.pipeline()
    for n in range(LETTERS):
        stack.admin.letters.add(pipe, letter(at=1000.0 + n))
    pipe.execute()
    return stack, {**os.environ, **stack.env}


def test_replay_at_a_terminal_draws_a_bar_to_the_end(many):
    stack, env = many
    code, screen = at_terminal(env, "dlq", "replay", "--all", "--yes")
    assert code == 0, screen
    assert BAR.search(screen) and RATE.search(screen), screen
    assert "100%|" in screen and f"{LETTERS}/{LETTERS}" in screen, screen
    assert f"Replayed {LETTERS} of {LETTERS} dead letters ({2 * LETTERS} events)." in screen
    assert stack.admin.letters.count("gravity") == 0


def test_replay_into_a_pipe_prints_only_what_it_always_printed(many):
    stack, env = many
    result = piped(env, "dlq", "replay", "--all", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"Replaying {LETTERS} dead letters ({2 * LETTERS} events)...\n"
        f"Replayed {LETTERS} of {LETTERS} dead letters ({2 * LETTERS} events).\n"
    )
    assert result.stderr == (  # the audit line (a WARNING: it changed something), as ever
        f"replay: {LETTERS} of {LETTERS} dead letters ({2 * LETTERS} events) done; per destination: "
        "gravity 300; selection: all; origin: cli\n"
    )
    assert stack.admin.letters.count("gravity") == 0


def test_purge_at_a_terminal_draws_a_bar(many):
    stack, env = many
    code, screen = at_terminal(env, "dlq", "purge", "--destination", "gravity", "--yes")
    assert code == 0, screen
    assert f"{LETTERS}/{LETTERS}" in screen and BAR.search(screen), screen
    assert stack.admin.letters.count("gravity") == 0


def test_export_to_a_file_at_a_terminal_draws_a_bar_and_writes_the_same_file(many, tmp_path):
    _, env = many
    watched, quiet = tmp_path / "watched.jsonl", tmp_path / "quiet.jsonl"
    code, screen = at_terminal(env, "dlq", "export", "-o", str(watched))
    assert code == 0, screen
    assert RATE.search(screen) and f"{LETTERS}letter" in screen.replace(" ", ""), screen
    assert f"Wrote {LETTERS} dead letters to {watched}." in screen

    result = piped(env, "dlq", "export", "-o", str(quiet))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"Wrote {LETTERS} dead letters to {quiet}.\n"
    assert watched.read_text() == quiet.read_text()
    assert len(quiet.read_text().splitlines()) == LETTERS


def test_export_to_the_terminal_itself_draws_no_bar_into_the_data(many):
    """The lines on the terminal are the output (and its progress): a bar would be mixed into them."""
    _, env = many
    code, screen = at_terminal(env, "dlq", "export", "--limit", "20")
    assert code == 0, screen
    assert not RATE.search(screen) and not BAR.search(screen), screen
    assert len(screen.splitlines()) == 20


def test_erase_at_a_terminal_draws_a_bar_and_into_a_pipe_prints_only_its_line(make_stack, sandbox):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    stack.relay.enqueue([purchase(f"q-{n}", email=Q_EMAIL) for n in range(LETTERS)])
    stack.relay.enqueue([purchase("p-1", email=P_EMAIL), purchase("p-2", email=P_EMAIL)])
    env = {**os.environ, **stack.env}

    code, screen = at_terminal(env, "erase", "--email", P_EMAIL, "--yes")
    assert code == 0, screen
    assert RATE.search(screen), screen
    assert "Erased 2 events (stream gravity 2)." in screen
    assert P_EMAIL not in screen

    stack.relay.enqueue([purchase("p-3", email=P_EMAIL)])
    result = piped(env, "erase", "--email", P_EMAIL, "--yes", "--origin", "dsr-1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Erased 1 events (stream gravity 1).\n"
    assert result.stderr == (  # the audit line, as ever
        "erase of one person (by email): removed 1 of 1 events found: stream gravity 1; waiting none; "
        "dead_letters none; drains stopped: 0; origin: dsr-1\n"
    )
    assert stack.redis.xlen(Keys(stack.settings.key_prefix).stream("gravity")) == LETTERS
