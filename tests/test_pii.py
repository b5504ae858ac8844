"""Unit tests of conversion_relay.schemas.pii: normalising and hashing of e-mail, names and phone numbers."""

from __future__ import annotations

import hashlib

import pytest

from conversion_relay.schemas import pii
from conversion_relay.schemas.pii import PIIError, hash_email, hash_name, hash_phone, is_sha256_hex, normalise_phone


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


E164_HASH = sha256("+4915112345678")


# --- e-mail -----------------------------------------------------------------------------------


def test_hash_email_matches_gravity_documentation_test_vector():
    assert hash_email(" Customer@Example.com ") == "e233d4a29013e9d87150c6237c6777bedf379ebf1acdc5d6126fec7e8bb74fb5"


def test_hash_email_is_sha256_of_trimmed_lower_cased_address():
    assert hash_email("\tJane.Doe@Shop.Example \n") == sha256("jane.doe@shop.example")


def test_hash_email_passes_lower_case_hex_digest_unchanged():
    digest = sha256("someone@example.com")
    assert hash_email(digest) == digest


def test_hash_email_lower_cases_upper_case_hex_digest():
    digest = sha256("someone@example.com")
    assert hash_email(digest.upper()) == digest


@pytest.mark.parametrize("value", ["jane doe", "no-at-sign.example.com", "two@@example.com", "a@b", "", "   "])
def test_hash_email_rejects_values_that_are_not_addresses(value):
    with pytest.raises(PIIError, match="Not an e-mail address"):
        hash_email(value)


def test_pii_error_is_a_value_error():
    assert issubclass(PIIError, ValueError)


# --- names ------------------------------------------------------------------------------------


def test_hash_name_trims_and_lower_cases_before_hashing():
    assert hash_name("  Jürgen ") == hashlib.sha256("jürgen".encode()).hexdigest()
    assert hash_name("MÜLLER") == sha256("müller")


def test_hash_name_passes_hex_digest_lower_cased():
    digest = sha256("jane")
    assert hash_name(digest.upper()) == digest


def test_hash_name_rejects_blank_name():
    with pytest.raises(PIIError, match="Empty name"):
        hash_name("   ")


# --- phones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("+49 151 12345678", None),
        ("+4915112345678", None),
        ("+49 151 12345678", "DE"),
        ("0151 12345678", "DE"),
        (" 0151 12345678 ", "DE"),
    ],
)
def test_german_mobile_number_in_any_writing_hashes_to_its_e164_form(value, region):
    assert hash_phone(value, region) == E164_HASH


def test_normalise_phone_returns_e164():
    assert normalise_phone("0151 12345678", "DE") == "+4915112345678"


def test_country_code_in_number_wins_over_default_region():
    # A US number stays a US number even when the default region is DE.
    assert normalise_phone("+1 650 253 0000", "DE") == "+16502530000"


def test_hash_phone_passes_hex_digest_lower_cased():
    assert hash_phone(E164_HASH.upper()) == E164_HASH


def test_phone_without_country_code_and_without_region_names_e164_and_the_setting():
    with pytest.raises(PIIError) as info:
        hash_phone("0151 12345678")
    message = str(info.value)
    assert "E.164" in message
    assert "default_phone_region" in message


@pytest.mark.parametrize("value", ["not a phone", "call me maybe", "+"])
def test_garbage_phone_is_rejected(value):
    with pytest.raises(PIIError, match="Not a phone number"):
        hash_phone(value, "DE")


def test_phone_of_impossible_length_is_rejected():
    with pytest.raises(PIIError, match="Not a possible phone number"):
        hash_phone("+1 555 12")


def test_phone_far_too_long_is_rejected():
    with pytest.raises(PIIError):
        hash_phone("+49 151 123456789012345")


@pytest.mark.parametrize(
    ("value", "region", "problem"),
    [
        ("12", "DE", "Not a possible phone number"),  # was hashed as +4912
        ("123", "DE", "Not a possible phone number"),  # a local number without its area code
        ("+49 12", None, "Not a possible phone number"),
        ("+49 151 12345678901", None, "E.164 allows 15 digits"),  # 16 digits; phonenumbers allows it
    ],
)
def test_impossible_phone_numbers_are_refused(value, region, problem):
    with pytest.raises(PIIError, match=problem):
        hash_phone(value, region)


@pytest.mark.parametrize(
    ("value", "e164"),
    [("+683 4002", "+6834002"), ("+49 30 123", "+4930123"), ("+1 650 253 0000", "+16502530000")],
)
def test_short_and_long_numbers_that_exist_pass(value, e164):
    """Niue's four-digit numbers are the shortest national numbers in use; a 15-digit one the longest."""
    assert normalise_phone(value, None) == e164


# --- messages never carry the value -----------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "value"),
    [
        (hash_email, "Jane Doe 0176 98765432"),
        (hash_email, "jane.doe@example"),
        (hash_phone, "0176 98765432"),
        (lambda v: hash_phone(v, "DE"), "janedoe-phone"),
        (hash_phone, "+1 555 77"),
        (hash_phone, "+49 176 987654329876543"),
    ],
)
def test_pii_error_messages_never_contain_the_input(func, value):
    with pytest.raises(PIIError) as info:
        func(value)
    message = str(info.value)
    assert len(message) > 20  # says what is wrong
    assert value not in message
    assert value.lower() not in message.lower()
    digits = "".join(ch for ch in value if ch.isdigit())
    if digits:
        assert digits not in "".join(ch for ch in message if ch.isdigit())


def test_is_sha256_hex():
    assert is_sha256_hex("a" * 64)
    assert is_sha256_hex("A" * 64)
    assert not is_sha256_hex("a" * 63)
    assert not is_sha256_hex("g" * 64)
    assert not is_sha256_hex("a" * 65)


def test_module_doctest_vector_matches_sha256_of_normalised_address():
    assert pii.sha256_hex("customer@example.com") == hash_email(" Customer@Example.com ")
