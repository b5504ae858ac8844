"""Masking personal data and secrets in text a vendor wrote: response excerpts, per-event errors.

Vendors echo what they were sent -- an address they refuse, the caller's IP, a phone number, at
times the key itself -- and such text is kept with waiting batches and dead letters and goes to
log lines.  The relay never stores plaintext personal data, so everything that looks like an
e-mail address, a phone number, an IPv4 or IPv6 address, or a bearer token or API key is
replaced by a label (``[email]``, ``[phone]``, ``[ip]``, ``[secret]``) before it is kept.

The patterns are deliberately greedy: a date or a long number may be masked too, which costs a
little of an excerpt's meaning, never a person's data.  Masking is idempotent.

>>> mask_personal("refused jane@example.org from 203.0.113.9, key Bearer abc123def456")
'refused [email] from [ip], key Bearer [secret]'
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

EMAIL = "[email]"
PHONE = "[phone]"
IP = "[ip]"
SECRET = "[secret]"
#: What replaces a secret or personal value in logs and error reports.
REDACTED = "[redacted]"

_JWT = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
# A scheme and its credentials: "Bearer <token>", "Basic <base64>", "Token <key>".  After the
# word "token", prose is common ("access token missing"): only a value with a digit or a
# symbol of base64 or a URL-safe key is taken for a credential there.
_SCHEME = re.compile(r"(?i)\b(bearer|basic|token(?=\s+[^\s\"',;&}\[\]]*[0-9+/=_.~-]))(\s+)([^\s\"',;&}\[\]]{4,})")
# A key-like name and its value: api_key=..., "token": "...", x-api-key: ...
_KEYED = re.compile(
    r"(?i)\b((?:x-)?api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|secret|client[_-]?secret|password|passwd"
    r"|authorization|sig(?:nature)?)"
    r"(\"?'?\s*[:=]\s*\"?'?)([^\s\"',;&}\[\]]{4,})"
)
# Opaque keys with a vendor prefix (sk_live_..., pk_test_...), and long runs of letters and
# digits mixed, as keys and digests are.
_PREFIXED = re.compile(r"\b(?:sk|pk|rk|ak)_(?:live|test)_[A-Za-z0-9_]{6,}")
_OPAQUE = re.compile(r"\b(?=[A-Za-z0-9_]*\d)(?=[A-Za-z0-9_]*[A-Za-z])[A-Za-z0-9_]{24,}\b")
# The look-behind lets a match start only where a local part can start (else a long run of
# letters costs quadratic time); ``%40`` is an '@' percent-encoded in a URL.
_EMAIL = re.compile(r"(?<![\w.%+'-])[\w.%+'-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])\[?([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?:\.\d{1,3}){0,3})\]?"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.])")
# Digits with at most one separator between them (space, dot, dash, slash), an optional country
# code and area code in parentheses: 7 digits or more are a phone number as far as an excerpt is
# concerned (or a card or account number, as personal) -- except a calendar date.
_DIGITS = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)\s?)?\d(?:[\s./-]?\d){4,}(?!\w)")
_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{4}")


def mask_personal(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers, IP addresses and secrets replaced."""
    if not text:
        return text
    text = _JWT.sub(SECRET, text)
    text = _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{SECRET}", text)
    text = _KEYED.sub(lambda m: f"{m.group(1)}{m.group(2)}{SECRET}", text)
    text = _PREFIXED.sub(SECRET, text)
    text = _EMAIL.sub(EMAIL, text)
    text = _IPV6_CANDIDATE.sub(_ipv6, text)
    text = _IPV4.sub(IP, text)
    text = _OPAQUE.sub(SECRET, text)
    return _DIGITS.sub(_phone, text)


def _ipv6(match: re.Match[str]) -> str:
    candidate = match.group(1).split("%", 1)[0]
    if not any(c.isalnum() for c in candidate):
        return match.group(0)
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return match.group(0)
    return IP


def _phone(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = sum(c.isdigit() for c in found)
    if digits < 7 or _DATE.fullmatch(found):
        return found
    return PHONE


def without_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every configured secret (4 characters or more) replaced by ``[secret]``.

    Vendors echo keys, and not every key looks like one to :func:`mask_personal`, which masks
    by pattern (a UUID, a password).  An excerpt cut inside a key (it ends in "…") would keep
    the key's start: a tail that begins a secret is replaced too.
    """
    known = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)
    body, cut = (text[:-1], "…") if text.endswith("…") else (text, "")
    for secret in known:
        body = body.replace(secret, SECRET)
    if cut:
        for secret in known:
            start = next((k for k in range(len(secret) - 1, 3, -1) if body.endswith(secret[:k])), 0)
            if start:
                body = body[:-start] + SECRET
                break
    return body + cut
