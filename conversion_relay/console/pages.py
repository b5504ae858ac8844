"""The console's HTML: small template functions, every value passed through :func:`html.escape`.

A dead letter holds what a vendor wrote back (masked on the way to Redis, but still the
vendor's text) and events a web app sent; either may hold markup, so nothing reaches a page
unescaped.  No script runs on any page: forms and links do everything.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from conversion_relay.console.guard import CSRF_FIELD
from conversion_relay.version import __version__

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#243447;color:#fff;padding:8px 16px}header a{color:#fff;margin-right:16px}
main{padding:12px 16px}table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
pre{background:#f7f7f7;border:1px solid #ddd;padding:8px;white-space:pre-wrap;max-width:100ch}
.bad{color:#a00}.ok{color:#070}.note{background:#fff7d6;border:1px solid #e0c860;padding:8px;margin:8px 0}
form.inline{display:inline}input,select,button{font:inherit}
"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def layout(title: str, body: str, *, nav: bool = True) -> str:
    links = '<a href="/">Status</a><a href="/dead-letters">Dead letters</a>' if nav else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} - conversion-relay</title>'
        f"<style>{_STYLE}</style></head><body><header>{links}"
        f'<span style="float:right">conversion-relay {e(__version__)}</span></header>'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )


def _table(headings: Iterable[str], rows: Iterable[Iterable[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    ident = f' id="{e(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _hidden(fields: Mapping[str, str], csrf: str | None = None, ids: Iterable[str] = ()) -> str:
    out = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items())
    out += "".join(f'<input type="hidden" name="id" value="{e(i)}">' for i in ids)
    if csrf is not None:
        out += f'<input type="hidden" name="{CSRF_FIELD}" value="{e(csrf)}">'
    return out


def _next_attempt(waiting: list[dict[str, Any]]) -> float | None:
    due = [b.get("next_attempt_at") for b in waiting if b.get("next_attempt_at")]
    return min(due) if due else None


def status_page(report: Mapping[str, Any]) -> str:
    """Per destination: backlog, waiting batches and their next attempt, back-off, the
    breaker's run of failures, dead letters, the lag (age of the oldest undelivered event), the
    last success, counters and skips by reason."""
    rows = []
    for name, dest in sorted(report.items()):
        failing = dest.get("failing")
        rows.append(
            [
                f'<a href="/dead-letters?{urlencode({"destination": name})}">{e(name)}</a>',
                e(dest["vendor"]),
                "yes" if dest["enabled"] else '<span class="bad">no</span>',
                e(dest["backlog"]["unread"]),
                e(dest["backlog"]["pending"]),
                f"{e(dest['waiting_batches'])} ({e(dest['waiting_events'])} events)",
                e(when(_next_attempt(dest.get("waiting", [])))),
                e(when(dest.get("backing_off_until"))),
                f'<span class="bad">{e(failing["failures"])} since {e(when(failing["since"]))}</span>'
                if failing
                else '<span class="ok">no</span>',
                f'<a href="/dead-letters?{urlencode({"destination": name})}">{e(dest["dead_letters"])}</a>',
                e(f"{dest['oldest_undelivered_age_seconds']:.0f} s"),
                e(when(dest.get("last_success"))),
            ]
        )
    body = _table(
        [
            "Destination", "Vendor", "Enabled", "Unread", "In flight", "Waiting", "Next attempt",
            "Backing off until", "Failing", "Dead letters", "Lag", "Last success",
        ],
        rows,
        "destinations",
    )  # fmt: skip
    for name, dest in sorted(report.items()):
        counters = dest["counters"]
        skips = dest.get("skipped_by_reason") or {}
        body += f'<h2 id="counters-{e(name)}">{e(name)}</h2>'
        body += _table(["Counter", "Value"], [[e(k), e(v)] for k, v in counters.items()])
        if skips:
            body += "<h3>Skips by reason</h3>" + _table(["Reason", "Events"], [[e(k), e(v)] for k, v in skips.items()])
    return layout("Status", body)


def _filter_form(filters: Mapping[str, str], destinations: Iterable[str]) -> str:
    options = '<option value="">any</option>' + "".join(
        f'<option value="{e(d)}"{" selected" if filters.get("destination") == d else ""}>{e(d)}</option>'
        for d in destinations
    )
    return (
        '<form method="get" action="/dead-letters" id="filters">'
        f'<label>Destination <select name="destination">{options}</select></label> '
        f'<label>Reason <input name="reason" size="22" placeholder="http_401, too_large..." '
        f'value="{e(filters.get("reason", ""))}"></label> '
        f'<label>Since <input name="since" size="22" placeholder="2h, 2026-11-23T10:00Z" '
        f'value="{e(filters.get("since", ""))}"></label> '
        f'<label>Until <input name="until" size="22" value="{e(filters.get("until", ""))}"></label> '
        '<button type="submit" id="apply-filters">Filter</button></form>'
    )


def letters_page(
    letters: list[dict[str, Any]], filters: Mapping[str, str], destinations: Iterable[str], csrf: str, more: bool
) -> str:
    rows = [
        [
            f'<a class="letter" href="/dead-letters/{quote(letter["id"])}">{e(letter["id"])}</a>',
            e(letter["destination"]),
            e(letter["reason"]),
            e(letter["status"]),
            e(letter["events"]),
            e(letter["attempts"]),
            e(when(letter["last_failed_at"])),
        ]
        for letter in letters
    ]
    body = _filter_form(filters, destinations)
    if letters:
        body += _table(["Id", "Destination", "Reason", "Status", "Events", "Attempts", "Last failure"], rows, "letters")
        if more:
            body += (
                '<p class="note">Only the oldest entries are listed; replay, purge and export cover every match.</p>'
            )
    else:
        body += '<p id="no-letters">No dead letters match.</p>'
    query = urlencode(filters)
    body += f'<p><a id="export" href="/dead-letters.jsonl?{e(query)}">Export the matches as JSON lines</a></p>'
    if filters:
        body += (
            '<form class="inline" method="post" action="/dead-letters/replay">'
            + _hidden(filters, csrf)
            + '<button id="replay-matching">Replay every match...</button></form> '
            '<form class="inline" method="post" action="/dead-letters/purge">'
            + _hidden(filters, csrf)
            + '<button id="purge-matching">Purge every match...</button></form>'
        )
    else:
        body += "<p>Filter first to replay or purge many; one letter's page replays or purges just it.</p>"
    return layout("Dead letters", body)


def letter_page(letter: Mapping[str, Any], csrf: str) -> str:
    """One letter in full: reason, status, the vendor's (masked) excerpt, attempts, errors per
    event, and the events as stored -- as they would be sent again."""
    facts = [
        ("Id", letter["id"]),
        ("Destination", letter["destination"]),
        ("Vendor", letter["vendor"]),
        ("Reason", letter["reason"]),
        ("Status", letter["status"]),
        ("Attempts", letter["attempts"]),
        ("First failure", when(letter["first_failed_at"])),
        ("Last failure", when(letter["last_failed_at"])),
        ("Request group", letter.get("group") or "-"),
    ]
    body = _table(["Field", "Value"], [[e(k), e(v)] for k, v in facts], "letter")
    body += f'<h2>Response excerpt</h2><pre id="excerpt">{e(letter["excerpt"] or "-")}</pre>'
    if letter.get("errors"):
        body += "<h2>Errors per event</h2>" + _table(
            ["Event", "Vendor's message"], [[e(k), e(v)] for k, v in sorted(letter["errors"].items())]
        )
    events = letter.get("events", [])
    body += f"<h2>Payload ({len(events)} events, as stored and as a replay sends it)</h2>"
    body += f'<pre id="payload">{e(json.dumps(events, indent=2, ensure_ascii=False))}</pre>'
    ids = [letter["id"]]
    body += (
        '<form class="inline" method="post" action="/dead-letters/replay">'
        + _hidden({}, csrf, ids)
        + '<button id="replay">Replay...</button></form> '
        '<form class="inline" method="post" action="/dead-letters/purge">'
        + _hidden({}, csrf, ids)
        + '<button id="purge">Purge...</button></form>'
    )
    return layout(f"Dead letter {letter['id']}", body)


def confirm_page(action: str, result: Mapping[str, Any], fields: Mapping[str, str], ids: list[str], csrf: str) -> str:
    """The dry run's count, and the form that does it for real."""
    verb = "replayed" if action == "replay" else "deleted for good"
    what = "; ".join(f"{k}={v}" for k, v in fields.items()) or f"{len(ids)} chosen"
    body = (
        f'<p id="dry-run">Dry run: {e(result["entries"])} dead letters ({e(result["events"])} events) '
        f"would be {verb}. Selection: {e(what)}.</p>"
    )
    if result["entries"]:
        body += (
            f'<form method="post" action="/dead-letters/{e(action)}">'
            + _hidden({**fields, "confirm": "yes"}, csrf, ids)
            + f'<button id="confirm">{e(action.capitalize())} {e(result["entries"])} dead letters</button></form>'
        )
    body += '<p><a href="/dead-letters" id="cancel">Cancel</a></p>'
    return layout(f"{action.capitalize()}: confirm", body)


def done_page(action: str, result: Mapping[str, Any]) -> str:
    verb = "Replayed" if action == "replay" else "Purged"
    body = (
        f'<p id="done">{verb} {e(result["done"])} of {e(result["entries"])} dead letters '
        f"({e(result['events'])} events).</p>"
    )
    if action == "replay":
        body += "<p>Each is due now at its destination; one that fails again returns here under a new id.</p>"
    body += '<p><a href="/dead-letters" id="back">Back to the dead letters</a></p>'
    return layout(f"{verb}", body)


def message_page(title: str, message: str) -> str:
    return layout(title, f'<p class="bad" id="error">{e(message)}</p><p><a href="/">Status</a></p>')


def login_page(failed: bool) -> str:
    note = '<p class="bad" id="error">That is not the access token.</p>' if failed else ""
    body = (
        note + '<form method="post" action="/login"><label>Access token '
        '<input type="password" name="token" autocomplete="current-password"></label> '
        '<button id="login">Log in</button></form>'
    )
    return layout("Log in", body, nav=False)
