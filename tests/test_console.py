"""The web console without a browser: real HTTP on loopback to a real console server, over a
real Redis holding real dead letters.

What a browser cannot easily show is checked here: forms without the CSRF token (or from
another origin) are refused and change nothing, the access token is demanded, a vendor's
markup in a letter is shown as text, the export is one JSON line per matching letter, and the
filters reach the store's selection.  tests/test_console_browser.py drives the pages in chromium.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from conversion_relay.cli import main
from conversion_relay.console import ConsoleApp, ConsoleServer, Guard, check_bind
from conversion_relay.errors import ConfigurationError
from conversion_relay.ops.admin import Admin
from conversion_relay.store.deadletter import DeadLetter
from tests.conftest import gravity_destination

SCRIPT = "<script>alert('x')</script>"


def letter(
    destination: str = "gravity", reason: str = "http_401", at: float | None = None, **fields: Any
) -> DeadLetter:
    at = time.time() if at is None else at
    values: dict[str, Any] = {
        "destination": destination,
        "vendor": "gravity_capi",
        "group": "",
        "parts": [json.dumps({"event_name": "Purchase", "event_id": f"e-{reason}-{at}"})],
        "reason": reason,
        "status": int(reason[5:]) if reason.startswith("http_") else None,
        "excerpt": '{"error":"unauthorized"}',
        "attempts": 1,
        "first_failed_at": at - 5,
        "last_failed_at": at,
        **fields,
    }
    return DeadLetter(**values)


def store(stack: Any, *letters: DeadLetter) -> list[str]:
    pipe = stack.redis.pipeline()
    for one in letters:
        stack.admin.letters.add(pipe, one)
    pipe.execute()
    return [one.id for one in letters]


@pytest.fixture
def stack(make_stack, sandbox):
    return make_stack(destinations={"gravity": gravity_destination(sandbox), "other": gravity_destination(sandbox)})


def serve(stack: Any, token: str | None = None) -> Iterator[str]:
    server = ConsoleServer(ConsoleApp(stack.admin, Guard(token)), "127.0.0.1", 0).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def console(stack) -> Iterator[str]:
    yield from serve(stack)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


# --- CSRF ------------------------------------------------------------------------------------


def test_purge_without_the_csrf_token_is_refused_and_changes_nothing(stack, console):
    (entry,) = store(stack, letter())
    browser = requests.Session()
    page = browser.get(f"{console}/dead-letters/{entry}")
    assert page.status_code == 200 and browser.cookies.get("cr_csrf")
    token = csrf_of(page.text)

    bare = requests.post(f"{console}/dead-letters/purge", data={"id": entry, "confirm": "yes"})
    no_token = browser.post(f"{console}/dead-letters/purge", data={"id": entry, "confirm": "yes"})
    other_browser = requests.post(  # a token taken from another browser's page, without its cookie
        f"{console}/dead-letters/purge", data={"id": entry, "confirm": "yes", "csrf": token}
    )
    forged = browser.post(f"{console}/dead-letters/purge", data={"id": entry, "confirm": "yes", "csrf": "0" * 64})
    other_site = browser.post(
        f"{console}/dead-letters/purge",
        data={"id": entry, "confirm": "yes", "csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert [r.status_code for r in (bare, no_token, other_browser, forged, other_site)] == [403] * 5
    assert stack.admin.letters.get(entry) is not None

    dry = browser.post(f"{console}/dead-letters/purge", data={"id": entry, "csrf": token})
    assert dry.status_code == 200 and "Dry run: 1 dead letters (1 events) would be deleted for good" in dry.text
    assert stack.admin.letters.get(entry) is not None
    done = browser.post(
        f"{console}/dead-letters/purge", data={"id": entry, "csrf": csrf_of(dry.text), "confirm": "yes"}
    )
    assert done.status_code == 200 and "Purged 1 of 1 dead letters" in done.text
    assert stack.admin.letters.get(entry) is None


def test_replay_and_purge_refuse_an_unfiltered_selection(stack, console):
    store(stack, letter())
    browser = requests.Session()
    token = csrf_of(browser.get(f"{console}/dead-letters/{store(stack, letter())[0]}").text)
    refused = browser.post(f"{console}/dead-letters/replay", data={"csrf": token, "confirm": "yes"})
    assert refused.status_code == 400 and "no ids and no filter given" in refused.text
    assert len(stack.dead_letters()) == 2


# --- access -----------------------------------------------------------------------------------


def test_a_non_loopback_bind_needs_an_access_token(monkeypatch, capsys):
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", "s3cret")
    for host in ("0.0.0.0", "192.0.2.1", "::", "relay.example"):
        with pytest.raises(ConfigurationError, match="access token"):
            check_bind(host, None)
    monkeypatch.delenv("CONVERSION_RELAY_CONSOLE_TOKEN", raising=False)
    assert main(["console", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--host: 0.0.0.0 is reachable from other machines" in err and "CONVERSION_RELAY_CONSOLE_TOKEN" in err


def test_the_command_serves_the_console_and_a_token_guards_it(stack):
    """``conversion-relay console`` itself, as an operator starts it: beyond loopback with a token."""
    env = {**stack.env, "CONSOLE_TEST_TOKEN": "s3cret"}
    command = [sys.executable, "-m", "conversion_relay.cli", "console", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--token-env", "CONSOLE_TEST_TOKEN"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stderr.readline()
        port = re.search(r"console on http://0\.0\.0\.0:(\d+) ", line)
        assert port, line
        url = f"http://127.0.0.1:{port.group(1)}"
        assert requests.get(f"{url}/").status_code == 401
        page = requests.get(f"{url}/", headers={"Authorization": "Bearer s3cret"})
        assert page.status_code == 200 and "gravity" in page.text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_with_a_token_every_request_needs_it(stack):
    (entry,) = store(stack, letter())
    for url in serve(stack, token="s3cret"):
        assert requests.get(f"{url}/", allow_redirects=False).status_code == 401
        assert requests.get(f"{url}/dead-letters.jsonl", allow_redirects=False).status_code == 401
        page = requests.get(f"{url}/dead-letters", headers={"Accept": "text/html"}, allow_redirects=False)
        assert page.status_code == 303 and page.headers["Location"] == "/login"
        wrong = requests.get(f"{url}/", headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401
        assert requests.get(f"{url}/", headers={"Authorization": "Bearer s3cret"}).status_code == 200

        browser = requests.Session()
        assert browser.post(f"{url}/login", data={"token": "nope"}).status_code == 401
        assert browser.get(f"{url}/", allow_redirects=False).status_code == 401
        logged_in = browser.post(f"{url}/login", data={"token": "s3cret"})
        assert logged_in.status_code == 200 and "Status" in logged_in.text
        assert "s3cret" not in browser.cookies.get("cr_session", "")
        assert entry in browser.get(f"{url}/dead-letters").text

    for url in serve(stack, token="another"):  # a session of another process (or token) is void
        stale = requests.get(f"{url}/", cookies={"cr_session": browser.cookies["cr_session"]}, allow_redirects=False)
        assert stale.status_code == 401


# --- rendering -----------------------------------------------------------------------------------


def test_markup_in_a_letter_is_shown_as_text(stack, console):
    parts = [json.dumps({"event_name": "Purchase", "event_id": "</pre>" + SCRIPT})]
    (entry,) = store(
        stack, letter(excerpt='{"error": "' + SCRIPT + '"}', parts=parts, errors={"0": SCRIPT}, reason="http_400")
    )
    page = requests.get(f"{console}/dead-letters/{entry}")
    assert page.status_code == 200
    assert "<script>" not in page.text and "</pre><script" not in page.text
    assert page.text.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") == 3
    assert "script-src" not in page.headers["Content-Security-Policy"]
    listed = requests.get(f"{console}/dead-letters", params={"reason": "http_400"})
    assert entry in listed.text and "<script>" not in listed.text


def test_status_shows_every_destination_with_its_dead_letters(stack, console):
    store(stack, letter(), letter(), letter("other"))
    page = requests.get(f"{console}/")
    assert page.status_code == 200
    rows = re.findall(r"<tr><td><a href=\"/dead-letters\?destination=(\w+)\">\w+</a></td>(.*?)</tr>", page.text)
    dead = {name: re.findall(r"<a href=\"/dead-letters\?destination=\w+\">(\d+)</a>", cells)[0] for name, cells in rows}
    assert dead == {"gravity": "2", "other": "1"}
    assert "<th>Lag</th>" in page.text and "<th>Last success</th>" in page.text
    lag_and_last = {name: re.findall(r"<td>([^<]*)</td><td>([^<]*)</td>$", cells)[0] for name, cells in rows}
    assert lag_and_last == {"gravity": ("0 s", "-"), "other": ("0 s", "-")}  # nothing waiting, nothing sent yet


# --- filters and export -------------------------------------------------------------------------


def test_filters_select_by_destination_reason_and_time(stack, console):
    now = time.time()
    old = letter(reason="http_401", at=now - 7200)
    new_401 = letter(reason="http_401", at=now - 60)
    new_400 = letter(reason="http_400", at=now - 30)
    elsewhere = letter("other", reason="http_401", at=now - 10)
    store(stack, old, new_401, new_400, elsewhere)

    def listed(**params: str) -> set[str]:
        page = requests.get(f"{console}/dead-letters", params=params)
        assert page.status_code == 200, page.text
        return set(re.findall(r'class="letter" href="/dead-letters/(\w+)"', page.text))

    assert listed() == {old.id, new_401.id, new_400.id, elsewhere.id}
    assert listed(destination="gravity") == {old.id, new_401.id, new_400.id}
    assert listed(destination="gravity", reason="http_401") == {old.id, new_401.id}
    assert listed(reason="http_401", since="1h") == {new_401.id, elsewhere.id}
    assert listed(since=str(now - 45), until=str(now - 20)) == {new_400.id}

    bad = requests.get(f"{console}/dead-letters", params={"since": "yesterday"})
    assert bad.status_code == 400 and "since: &#x27;yesterday&#x27; is not a time" in bad.text
    unknown = requests.get(f"{console}/dead-letters", params={"destination": "gravty"})
    assert unknown.status_code == 400 and "&#x27;gravty&#x27; is not configured" in unknown.text
    nonsense = requests.get(f"{console}/dead-letters", params={"reason": "because"})
    assert nonsense.status_code == 400 and "reason" in nonsense.text


def test_export_is_one_json_line_per_matching_letter_with_its_events(stack, console):
    first, second, elsewhere = letter(), letter(reason="http_400"), letter("other")
    store(stack, first, second, elsewhere)
    export = requests.get(f"{console}/dead-letters.jsonl", params={"destination": "gravity"})
    assert export.status_code == 200 and export.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert sorted(x["id"] for x in lines) == sorted([first.id, second.id])
    assert {x["id"]: x["events"] for x in lines}[first.id] == [json.loads(first.parts[0])]
    only_400 = requests.get(f"{console}/dead-letters.jsonl", params={"reason": "http_400"}).text.splitlines()
    assert [json.loads(line)["id"] for line in only_400] == [second.id]


def test_a_letter_gone_is_not_found(stack, console):
    page = requests.get(f"{console}/dead-letters/0123456789abcdef")
    assert page.status_code == 404 and "replayed, purged or expired" in page.text


def test_redis_out_of_reach_is_a_page_that_says_so(stack):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    server = ConsoleServer(ConsoleApp(Admin(stack.settings, gone), Guard()), "127.0.0.1", 0).start()
    try:
        page = requests.get(f"{server.url}/dead-letters")
        assert page.status_code == 503 and "Redis did not answer (ConnectionError); check REDIS_URL." in page.text
    finally:
        server.stop()


def test_the_console_serves_the_metrics_scrape(stack, console):
    """``/metrics`` is ``conversion-relay metrics``'s scrape, parsed by prometheus-client."""
    stack.relay.enqueue({"event_name": "Purchase", "event_id": "m-1", "custom_data": {"value": 1.0, "currency": "EUR"}})
    answer = requests.get(f"{console}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    assert samples[("conversion_relay_redis_up", ())] == 1
    unread = [
        v
        for (name, labels), v in samples.items()
        if name == "conversion_relay_backlog_events" and ("state", "unread") in labels
    ]
    assert sum(unread) >= 1
