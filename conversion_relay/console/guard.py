"""Who may use the console, and proof that a form was sent by the console's own page.

Two checks, both keyed by a secret made when the process starts (so a restart logs everyone out
and voids every open form):

* **Access token.**  Off loopback the console shows dead letters -- events with hashed personal
  data, IP addresses and user agents -- and can replay or purge them, so it refuses to listen
  on anything but loopback unless an access token is set (:func:`check_bind`).  With a token,
  each request carries it as ``Authorization: Bearer <token>``, or the session cookie that the
  login form sets (an HMAC of the token, never the token itself).
* **CSRF.**  Every POST carries a form token that is the HMAC of the browser's ``cr_csrf``
  cookie (random, ``SameSite=Strict``, ``HttpOnly``); a page on another site can neither read
  the cookie nor compute the token.  A POST whose ``Origin`` names another host is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from conversion_relay.errors import ConfigurationError

CSRF_COOKIE = "cr_csrf"
SESSION_COOKIE = "cr_session"
CSRF_FIELD = "csrf"


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without an access token.

    Raises:
        ConfigurationError: ``host`` is not a loopback address and no token is set.
    """
    if not is_loopback(host) and not token:
        raise ConfigurationError(
            f"--host: {host} is reachable from other machines, and the console shows and replays dead letters; "
            "set an access token in the variable named by --token-env (default CONVERSION_RELAY_CONSOLE_TOKEN), "
            "or keep the default --host 127.0.0.1 and reach it through an SSH tunnel."
        )


def cookies(environ: dict[str, Any]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(environ.get("HTTP_COOKIE", ""))
    except Exception:  # noqa: BLE001 -- a malformed Cookie header is as good as none
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


class Guard:
    """The access token (if any) and the CSRF secret of one console process."""

    def __init__(self, token: str | None = None, secret: bytes | None = None) -> None:
        self.token = token or None
        self._secret = secret or secrets.token_bytes(32)

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    # --- access ---------------------------------------------------------------------------------

    def session_value(self) -> str:
        """The session cookie's value: proof of the token without the token."""
        return self._mac("session", self.token or "")

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), (self.token or "").encode())

    def allowed(self, environ: dict[str, Any]) -> bool:
        """No token set, the right bearer token, or the session cookie of this process."""
        if not self.token:
            return True
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth.startswith("Bearer ") and self.token_matches(auth[len("Bearer ") :].strip()):
            return True
        session = cookies(environ).get(SESSION_COOKIE, "")
        return bool(session) and hmac.compare_digest(session, self.session_value())

    # --- CSRF -----------------------------------------------------------------------------------

    @staticmethod
    def new_browser_id() -> str:
        return secrets.token_hex(16)

    def csrf_token(self, browser_id: str) -> str:
        return self._mac("csrf", browser_id)

    def csrf_valid(self, environ: dict[str, Any], form_token: str) -> bool:
        """The form's token is this process's HMAC of the browser's cookie, and the request
        came from a page of this host (when the browser says where from)."""
        origin = environ.get("HTTP_ORIGIN")
        if origin and origin != "null" and urlsplit(origin).netloc != environ.get("HTTP_HOST", ""):
            return False
        browser_id = cookies(environ).get(CSRF_COOKIE, "")
        if not browser_id or not form_token:
            return False
        return hmac.compare_digest(form_token, self.csrf_token(browser_id))
