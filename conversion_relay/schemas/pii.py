"""Normalising and hashing of personal data, done in the producer before anything is stored.

The rules follow the Gravity Conversions API's own helper (``sha256(value.strip().lower())``,
hex digest); phone numbers are first written in E.164 (``+4915112345678``) with the
``phonenumbers`` library.  A value that already is 64 hex characters is taken to be a SHA-256
digest and passes unchanged (lower-cased), so callers may hash themselves.

>>> hash_email(" Customer@Example.com ")
'e233d4a29013e9d87150c6237c6777bedf379ebf1acdc5d6126fec7e8bb74fb5'
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

import phonenumbers

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# Deliberately loose: one '@', something on both sides, no whitespace.  Vendors match on the
# hash, so the goal is only to catch values that are obviously not addresses (a name, a phone).
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# An address inside other text (a URL, a free-form field, a log line), for refusing and
# masking: a local part of word characters, dots, '%', '+' or '-' right before the '@' (so a
# path such as medium.com/@anna.smith is not one), and a domain with a dot and a letter TLD.
# The look-behind lets a match start only where a local part can start: without it, a long run
# of letters costs quadratic time (a megabyte of them, hours).
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_EMAIL_IN_TEXT = re.compile(rf"(?<![\w.%+-])[\w.%+-]+@{_LABEL}(?:\.{_LABEL})*\.[^\W\d_]{{2,}}")

#: E.164: a country code and the national number together have at most 15 digits.
MAX_E164_DIGITS = 15
#: The shortest national (significant) numbers in use have 4 digits (Niue, Tokelau); shorter
#: ones are extensions or typos, which phonenumbers would otherwise accept ("12" in DE: +4912).
MIN_NATIONAL_DIGITS = 4

#: Keys that name an e-mail address, phone number or a person's name, compared after
#: :func:`key_name` (lower case, letters and digits only).  ``client_context`` is passed through
#: to vendors as it comes, so no object in it may carry them, at any depth: such data belongs in
#: ``user_data``'s hashed fields, whose own names (``em``, ``ph``, ``fn``, ``ln``) are listed too.
PERSONAL_KEYS = frozenset(
    {
        "em", "email", "emails", "emailaddress", "mail", "mailaddress",
        "ph", "phone", "phones", "phonenumber", "mobile", "mobilephone", "mobilenumber",
        "cellphone", "telephone", "tel", "fax",
        "fn", "firstname", "givenname", "forename",
        "ln", "lastname", "surname", "familyname",
        "name", "fullname", "customername",
    }
)  # fmt: skip


_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE


class PIIError(ValueError):
    """A personal-data value cannot be normalised; the message never contains the value."""


def looks_like_email(text: str) -> bool:
    """Whether an e-mail address appears anywhere in ``text``, also percent-encoded (``%40``)."""
    if "@" in text and _EMAIL_IN_TEXT.search(text):
        return True
    return "%40" in text.lower() and _EMAIL_IN_TEXT.search(unquote(text)) is not None


def mask_emails(text: str, mask: str) -> str:
    """``text`` with every e-mail address in it replaced by ``mask`` (percent-encoded ones too)."""
    if "%40" in text.lower() and looks_like_email(text):
        text = unquote(text)
    return _EMAIL_IN_TEXT.sub(mask, text) if "@" in text else text


def key_name(key: str) -> str:
    """A key as :data:`PERSONAL_KEYS` lists it: ``E-Mail``, ``e_mail`` and ``eMail`` are ``email``."""
    return "".join(ch for ch in key.lower() if ch.isalnum())


def is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and _HEX64.fullmatch(value) is not None


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hash_email(value: str) -> str:
    if is_sha256_hex(value):
        return value.lower()
    normalised = value.strip().lower()
    if not _EMAIL.fullmatch(normalised):
        raise PIIError("Not an e-mail address; give name@domain.tld or its SHA-256 hex digest.")
    return sha256_hex(normalised)


def hash_name(value: str) -> str:
    if is_sha256_hex(value):
        return value.lower()
    normalised = value.strip().lower()
    if not normalised:
        raise PIIError("Empty name; leave the field out instead.")
    return sha256_hex(normalised)


def normalise_phone(value: str, default_region: str | None) -> str:
    """The number in E.164 form.

    Raises:
        PIIError: when the number cannot be read or is impossible.
    """
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise PIIError(
                "No country code; write the number in E.164 (+4915112345678) or set relay.default_phone_region."
            ) from None
        raise PIIError("Not a phone number; write it in E.164, e.g. +4915112345678.") from None
    national = phonenumbers.national_significant_number(number)
    digits = len(str(number.country_code)) + len(national)
    if digits > MAX_E164_DIGITS:
        raise PIIError(
            f"Too long for a phone number: E.164 allows {MAX_E164_DIGITS} digits with the country code; "
            "check the digits."
        )
    # IS_POSSIBLE_LOCAL_ONLY is a number dialled inside its area: without the area code it is
    # no one's number ("12" read in DE).
    if len(national) < MIN_NATIONAL_DIGITS or phonenumbers.is_possible_number_with_reason(number) != _POSSIBLE:
        raise PIIError(
            "Not a possible phone number (wrong length for its country, or without its area code); "
            "write it in E.164 with country and area code, e.g. +4915112345678."
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def hash_phone(value: str, default_region: str | None = None) -> str:
    if is_sha256_hex(value):
        return value.lower()
    return sha256_hex(normalise_phone(value.strip(), default_region))
