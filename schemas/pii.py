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

import phonenumbers

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# Deliberately loose: one '@', something on both sides, no whitespace.  Vendors match on the
# hash, so the goal is only to catch values that are obviously not addresses (a name, a phone).
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class PIIError(ValueError):
    """A personal-data value cannot be normalised; the message never contains the value."""


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
    if not phonenumbers.is_possible_number(number):
        raise PIIError("Not a possible phone number (wrong length for its country); check the digits.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def hash_phone(value: str, default_region: str | None = None) -> str:
    if is_sha256_hex(value):
        return value.lower()
    return sha256_hex(normalise_phone(value.strip(), default_region))
