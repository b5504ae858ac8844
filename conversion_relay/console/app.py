"""The console's WSGI application: routes, the access and CSRF checks, and the admin calls.

Every operation goes through :class:`~conversion_relay.ops.admin.Admin`, as the command line's
and the ``relay.admin`` task's do, so the console checks and audits exactly what they do
(audit lines say ``origin: console``).  Replay and purge are two POSTs: the first is a dry run
that shows the count and a confirmation form, the second (``confirm=yes``) does it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import redis
from prometheus_client import CONTENT_TYPE_LATEST

import conversion_relay.console.pages as pages
from conversion_relay.console.forms import PAGE_SIZE, filters_of, selection_of
from conversion_relay.console.guard import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Guard, cookies
from conversion_relay.errors import RelayError
from conversion_relay.ops.metrics import metrics_text
from conversion_relay.store.selection import InvalidSelection

if TYPE_CHECKING:
    from conversion_relay.ops.admin import Admin

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
#: The largest form body read; the console's forms are a few hundred bytes.
MAX_FORM_BYTES = 64 * 1024
#: Origin of the audit lines of the console's replays and purges.
ORIGIN = "console"
_HTML = "text/html; charset=utf-8"
_STALE_FORM = "This form is not from this console, or the console restarted since; reload the page and try again."
_SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


class Response:
    def __init__(self, status: str, body: str | bytes, content_type: str = _HTML) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = [("Content-Type", content_type), *_SECURITY_HEADERS]


class ConsoleApp:
    """The WSGI callable: ``ConsoleApp(Admin(settings, client), Guard(token))``."""

    def __init__(self, admin: Admin, guard: Guard | None = None) -> None:
        self.admin = admin
        self.guard = guard or Guard()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        browser_id = cookies(environ).get(CSRF_COOKIE) or ""
        new_browser = not browser_id
        if new_browser:
            browser_id = self.guard.new_browser_id()
        response = self._respond(environ, browser_id)
        if new_browser:
            response.headers.append(("Set-Cookie", f"{CSRF_COOKIE}={browser_id}; Path=/; HttpOnly; SameSite=Strict"))
        start_response(response.status, response.headers)
        return [response.body]

    def _respond(self, environ: dict[str, Any], browser_id: str) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        if path == "/login":
            return self._login(environ, method)
        if not self.guard.allowed(environ):
            if method == "GET" and "text/html" in environ.get("HTTP_ACCEPT", ""):
                response = Response("303 See Other", "")
                response.headers.append(("Location", "/login"))
                return response
            return Response("401 Unauthorized", pages.message_page("Log in", "Give the console's access token."))
        csrf = self.guard.csrf_token(browser_id)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=False)
        try:
            if method == "GET":
                return self._get(path, query, csrf)
            if method == "POST":
                form = _read_form(environ)
                if not self.guard.csrf_valid(environ, (form.get(CSRF_FIELD) or [""])[0]):
                    return Response(
                        "403 Forbidden",
                        pages.message_page(
                            "Refused",
                            _STALE_FORM,
                        ),
                    )
                return self._post(path, form, csrf)
        except (InvalidSelection, RelayError) as exc:
            return Response("400 Bad Request", pages.message_page("Cannot do that", str(exc)))
        except redis.RedisError as exc:
            return Response(
                "503 Service Unavailable",
                pages.message_page(
                    "Redis out of reach", f"Redis did not answer ({type(exc).__name__}); check REDIS_URL."
                ),
            )
        return Response("405 Method Not Allowed", pages.message_page("Not allowed", f"{method} is not used here."))

    def _get(self, path: str, query: dict[str, list[str]], csrf: str) -> Response:
        if path == "/":
            return Response("200 OK", pages.status_page(self.admin.status()))
        if path == "/metrics":  # the same scrape as ``conversion-relay metrics``, behind the console's access check
            return Response("200 OK", metrics_text(self.admin.settings, self.admin.redis), CONTENT_TYPE_LATEST)
        if path == "/dead-letters":
            selection = selection_of(query, limit=PAGE_SIZE + 1)
            self._check_destination(selection.destination)
            letters = self.admin.list(selection)
            destinations = sorted(self.admin.settings.destinations)
            return Response(
                "200 OK",
                pages.letters_page(
                    letters[:PAGE_SIZE], filters_of(query), destinations, csrf, len(letters) > PAGE_SIZE
                ),
            )
        if path == "/dead-letters.jsonl":
            selection = selection_of(query)
            self._check_destination(selection.destination)
            out = io.StringIO()
            self.admin.export(selection, out)
            response = Response("200 OK", out.getvalue(), "application/x-ndjson; charset=utf-8")
            response.headers.append(("Content-Disposition", 'attachment; filename="dead-letters.jsonl"'))
            return response
        if path.startswith("/dead-letters/"):
            entry_id = unquote(path[len("/dead-letters/") :])
            letter = self.admin.show(entry_id) if entry_id else None
            if letter is None:
                return Response(
                    "404 Not Found",
                    pages.message_page("Not found", "No such dead letter: replayed, purged or expired since."),
                )
            return Response("200 OK", pages.letter_page(letter, csrf))
        return Response("404 Not Found", pages.message_page("Not found", "No such page."))

    def _post(self, path: str, form: dict[str, list[str]], csrf: str) -> Response:
        action = {"/dead-letters/replay": "replay", "/dead-letters/purge": "purge"}.get(path)
        if action is None:
            return Response("404 Not Found", pages.message_page("Not found", "No such action."))
        selection = selection_of(form)
        self._check_destination(selection.destination)
        run = self.admin.replay if action == "replay" else self.admin.purge
        confirmed = (form.get("confirm") or [""])[0] == "yes"
        result = run(selection, dry_run=not confirmed, origin=ORIGIN)
        if confirmed:
            return Response("200 OK", pages.done_page(action, result))
        return Response("200 OK", pages.confirm_page(action, result, filters_of(form), list(selection.ids), csrf))

    def _check_destination(self, name: str | None) -> None:
        """A destination must be configured, or still have dead letters (as on the command line)."""
        configured = self.admin.settings.destinations
        if name is not None and name not in configured and not self.admin.letters.count(name):
            known = ", ".join(sorted(configured)) or "none"
            raise InvalidSelection(
                f"destination: {name!r} is not configured (configured: {known}); check the spelling."
            )

    def _login(self, environ: dict[str, Any], method: str) -> Response:
        if not self.guard.token:
            response = Response("303 See Other", "")
            response.headers.append(("Location", "/"))
            return response
        if method != "POST":
            return Response("200 OK", pages.login_page(failed=False))
        given = (_read_form(environ).get("token") or [""])[0]
        if not self.guard.token_matches(given):
            return Response("401 Unauthorized", pages.login_page(failed=True))
        response = Response("303 See Other", "")
        response.headers += [
            ("Location", "/"),
            ("Set-Cookie", f"{SESSION_COOKIE}={self.guard.session_value()}; Path=/; HttpOnly; SameSite=Strict"),
        ]
        return response


def _read_form(environ: dict[str, Any]) -> dict[str, list[str]]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    return parse_qs(body.decode("utf-8", "replace"))
