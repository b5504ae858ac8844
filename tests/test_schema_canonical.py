"""Unit tests of the canonical event schema (conversion_relay.schemas.canonical) and EventValidationError."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from conversion_relay.errors import EventValidationError
from conversion_relay.schemas.canonical import STANDARD_EVENT_NAMES, canonical_many_schema, canonical_schema

FIXTURES = Path(__file__).parent / "fixtures"
PIXEL_FIELDS = ("grclid", "grcpid", "grpuid", "gradid", "grsig", "graid")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seed_event() -> dict[str, Any]:
    """The event the Gravity CAPI documentation's Python example builds for an order."""
    return json.loads((FIXTURES / "gravity_capi_seed_example.json").read_text())


def load(data: dict[str, Any], region: str | None = None) -> dict[str, Any]:
    return canonical_schema(region).load(copy.deepcopy(data))


def load_errors(data: Any, region: str | None = None) -> dict[Any, Any]:
    with pytest.raises(ValidationError) as info:
        canonical_schema(region).load(copy.deepcopy(data))
    return info.value.messages


def minimal(**fields: Any) -> dict[str, Any]:
    return {"event_name": "Purchase", "event_time": 1718973400, "event_id": "e-1", **fields}


# --- the vendor's own example -----------------------------------------------------------------


def test_gravity_documentation_example_loads_unchanged_apart_from_hashing():
    given = seed_event()
    loaded = load(given)

    expected = copy.deepcopy(given)
    expected["user_data"]["em"] = [sha256("customer@example.com")]
    assert loaded == expected
    # Spelled out, the parts that matter most:
    assert loaded["user_data"]["em"] == ["e233d4a29013e9d87150c6237c6777bedf379ebf1acdc5d6126fec7e8bb74fb5"]
    assert loaded["user_data"]["external_id"] == ["42"]
    assert loaded["event_id"] == "order-123"
    assert loaded["event_time"] == 1718973400
    assert loaded["custom_data"]["contents"] == [{"id": "SKU-1", "quantity": 1, "item_price": 99.99}]


def test_gravity_example_every_non_pii_field_equal_to_input():
    given = seed_event()
    loaded = load(given)
    for key, value in given.items():
        if key != "user_data":
            assert loaded[key] == value, key
    for key, value in given["user_data"].items():
        if key != "em":
            assert loaded["user_data"][key] == value, key
    assert set(loaded) == set(given)
    assert set(loaded["user_data"]) == set(given["user_data"])


def test_unattributed_visit_with_null_pixel_fields_empty_url_and_no_client_context_loads():
    given = seed_event()
    for key in PIXEL_FIELDS:
        given["user_data"][key] = None
    given["event_source_url"] = ""
    given["client_context"] = None

    loaded = load(given)

    assert loaded["event_name"] == "Purchase"
    assert loaded["event_id"] == "order-123"
    assert "event_source_url" not in loaded  # an empty URL is left out, not sent as ""
    assert "client_context" not in loaded  # nulls are left out of stored events
    for key in PIXEL_FIELDS:
        assert key not in loaded["user_data"]
    assert loaded["user_data"]["visitor_id"] == "gr-visitor-id"
    assert loaded["user_data"]["em"] == [sha256("customer@example.com")]
    assert loaded["custom_data"] == given["custom_data"]


def test_minimal_event_gets_defaults():
    loaded = load({"event_name": "Lead", "event_time": 1718973400, "event_id": "x"})
    assert loaded == {
        "event_name": "Lead",
        "event_time": 1718973400,
        "event_id": "x",
        "action_source": "website",
        "user_data": {},
    }


# --- filled-in fields -------------------------------------------------------------------------


def test_missing_event_id_is_generated_and_distinct_per_load():
    data = {"event_name": "Purchase", "event_time": 1718973400}
    ids = {load(data)["event_id"] for _ in range(5)}
    assert len(ids) == 5
    for event_id in ids:
        assert isinstance(event_id, str) and event_id


def test_missing_event_time_is_now_as_int():
    before = int(time.time())
    loaded = load({"event_name": "Purchase", "event_id": "e-1"})
    after = int(time.time())
    assert isinstance(loaded["event_time"], int)
    assert before <= loaded["event_time"] <= after


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("purchase", "Purchase"),
        ("PURCHASE", "Purchase"),
        ("addtocart", "AddToCart"),
        ("completeregistration", "CompleteRegistration"),
    ],
)
def test_standard_event_name_in_other_case_is_written_the_standard_way(given, expected):
    assert load(minimal(event_name=given))["event_name"] == expected


@pytest.mark.parametrize("name", ["newsletter_signup", "MyCustomEvent", "purchase_refund"])
def test_custom_event_names_are_kept_as_given(name):
    assert load(minimal(event_name=name))["event_name"] == name


def test_every_standard_name_round_trips():
    for name in STANDARD_EVENT_NAMES:
        assert load(minimal(event_name=name))["event_name"] == name


def test_empty_event_name_is_rejected():
    assert "event_name" in load_errors(minimal(event_name=""))


def test_missing_event_name_is_rejected():
    assert load_errors({"event_time": 1718973400}) == {"event_name": ["Missing data for required field."]}


def test_currency_is_upper_cased():
    loaded = load(minimal(custom_data={"currency": "eur", "value": 10}))
    assert loaded["custom_data"]["currency"] == "EUR"


@pytest.mark.parametrize("code", ["EURO", "XYZ", "US", "€"])
def test_unknown_currency_is_rejected_naming_iso_4217(code):
    errors = load_errors(minimal(custom_data={"currency": code}))
    message = errors["custom_data"]["currency"][0]
    assert "ISO 4217" in message


def test_integer_order_id_and_external_id_become_strings():
    loaded = load(minimal(custom_data={"order_id": 123}, user_data={"external_id": 42}))
    assert loaded["custom_data"]["order_id"] == "123"
    assert loaded["user_data"]["external_id"] == ["42"]


def test_integer_external_ids_in_a_list_become_strings():
    loaded = load(minimal(user_data={"external_id": [42, "43"]}))
    assert loaded["user_data"]["external_id"] == ["42", "43"]


def test_integer_event_id_becomes_string():
    assert load(minimal(event_id=987))["event_id"] == "987"


def test_boolean_identifier_is_rejected():
    errors = load_errors(minimal(custom_data={"order_id": True}))
    assert "order_id" in errors["custom_data"]


# --- event_time -------------------------------------------------------------------------------


def test_event_time_in_milliseconds_is_rejected_saying_so():
    errors = load_errors(minimal(event_time=1718973400000))
    assert "milliseconds" in errors["event_time"][0]


def test_event_time_far_in_future_is_rejected():
    errors = load_errors(minimal(event_time=int(time.time()) + 86400))
    assert errors["event_time"] == ["In the future; send the time the event happened, in UNIX seconds."]


def test_event_time_slightly_ahead_within_clock_skew_is_accepted():
    ahead = int(time.time()) + 60
    assert load(minimal(event_time=ahead))["event_time"] == ahead


def test_event_time_float_seconds_are_truncated_to_int():
    loaded = load(minimal(event_time=1718973400.75))
    assert loaded["event_time"] == 1718973400
    assert isinstance(loaded["event_time"], int)


@pytest.mark.parametrize(
    "iso",
    ["2024-06-21T12:36:40+00:00", "2024-06-21T12:36:40Z", "2024-06-21T14:36:40+02:00", "2024-06-21T08:36:40-04:00"],
)
def test_event_time_iso_8601_with_zone_is_converted_to_unix_seconds(iso):
    assert load(minimal(event_time=iso))["event_time"] == 1718973400


def test_event_time_iso_8601_without_zone_is_rejected():
    errors = load_errors(minimal(event_time="2024-06-21T12:36:40"))
    assert "time zone" in errors["event_time"][0]


@pytest.mark.parametrize("value", ["yesterday", True, [1718973400], 0, -5])
def test_event_time_nonsense_is_rejected(value):
    assert "event_time" in load_errors(minimal(event_time=value))


# --- user_data --------------------------------------------------------------------------------


def test_em_as_single_string_becomes_one_element_hashed_list():
    loaded = load(minimal(user_data={"em": " Customer@Example.com "}))
    assert loaded["user_data"]["em"] == ["e233d4a29013e9d87150c6237c6777bedf379ebf1acdc5d6126fec7e8bb74fb5"]


def test_em_already_hashed_passes_lower_cased():
    digest = sha256("customer@example.com")
    assert load(minimal(user_data={"em": [digest.upper()]}))["user_data"]["em"] == [digest]


def test_phone_uses_the_schema_region():
    loaded = load(minimal(user_data={"ph": "0151 12345678"}), region="DE")
    assert loaded["user_data"]["ph"] == [sha256("+4915112345678")]


def test_a_phone_number_too_short_to_be_anyones_is_refused_in_the_region():
    errors = load_errors(minimal(user_data={"ph": ["12"]}), region="DE")
    assert "Not a possible phone number" in errors["user_data"]["ph"][0][0]


def test_phone_without_country_code_and_no_region_is_rejected_with_hint():
    errors = load_errors(minimal(user_data={"ph": ["0151 12345678"]}))
    message = errors["user_data"]["ph"][0][0]
    assert "E.164" in message and "default_phone_region" in message
    assert "0151" not in message


def test_names_are_hashed():
    loaded = load(minimal(user_data={"fn": " Jane ", "ln": "DOE"}))
    assert loaded["user_data"]["fn"] == sha256("jane")
    assert loaded["user_data"]["ln"] == sha256("doe")


def test_invalid_email_message_does_not_repeat_the_value():
    errors = load_errors(minimal(user_data={"em": ["jane.doe-at-example.com"]}))
    message = errors["user_data"]["em"][0][0]
    assert "e-mail" in message
    assert "jane.doe" not in message


@pytest.mark.parametrize(("key", "hint"), [("email", "em"), ("phone", "ph"), ("first_name", "fn"), ("last_name", "ln")])
def test_misnamed_pii_key_in_user_data_is_rejected_with_hint(key, hint):
    errors = load_errors(minimal(user_data={key: "jane@example.com"}))
    message = errors["user_data"][key][0]
    assert f"goes in {hint}" in message
    assert "jane@example.com" not in json.dumps(errors)


def test_user_data_email_rejected_with_hint_naming_em():
    errors = load_errors(minimal(user_data={"email": "jane@example.com"}))
    assert errors == {"user_data": {"email": ["Unknown field; personal data goes in em (it is hashed there)."]}}


def test_misnamed_pii_key_at_top_level_is_rejected_with_hint():
    errors = load_errors(minimal(email="jane@example.com"))
    assert "em" in errors["email"][0]


def test_unknown_top_level_field_is_rejected():
    assert load_errors(minimal(colour="red")) == {"colour": ["Unknown field."]}


def test_unknown_user_data_field_is_rejected():
    assert load_errors(minimal(user_data={"shoe_size": "42"})) == {"user_data": {"shoe_size": ["Unknown field."]}}


def test_unknown_client_context_keys_are_kept():
    loaded = load(minimal(client_context={"timezone": "Europe/Berlin", "language": "de-DE"}))
    assert loaded["client_context"] == {"timezone": "Europe/Berlin", "language": "de-DE"}


def test_too_many_emails_are_rejected():
    emails = [f"user{i}@example.com" for i in range(11)]
    assert "em" in load_errors(minimal(user_data={"em": emails}))["user_data"]


def test_loaded_event_holds_no_plaintext_personal_data():
    data = minimal(
        user_data={
            "em": ["Jane.Doe@Example.com", "jd@work.example"],
            "ph": ["+49 151 12345678", "0176 98765432"],
            "fn": "Jane",
            "ln": "Doe-Smith",
            "external_id": ["42"],
        }
    )
    loaded = load(data, region="DE")
    text = json.dumps(loaded).lower()
    for plaintext in [
        "jane.doe@example.com",
        "jd@work.example",
        "@",
        "4915112345678",
        "15112345678",
        "17698765432",
        "jane",
        "doe-smith",
    ]:
        assert plaintext not in text, plaintext
    assert loaded["user_data"]["em"] == [sha256("jane.doe@example.com"), sha256("jd@work.example")]
    assert loaded["user_data"]["ph"] == [sha256("+4915112345678"), sha256("+4917698765432")]
    assert loaded["user_data"]["fn"] == sha256("jane")
    assert loaded["user_data"]["ln"] == sha256("doe-smith")


# --- lists ------------------------------------------------------------------------------------


def test_many_schema_loads_a_list():
    loaded = canonical_many_schema().load([minimal(event_id="a"), minimal(event_id="b", event_name="lead")])
    assert [(e["event_id"], e["event_name"]) for e in loaded] == [("a", "Purchase"), ("b", "Lead")]


def test_errors_for_a_list_are_keyed_by_index():
    events = [minimal(event_id="a"), minimal(event_id="b", user_data={"em": ["not-an-email"]}), minimal(event_id="c")]
    with pytest.raises(ValidationError) as info:
        canonical_many_schema().load(events)
    messages = info.value.messages
    assert set(messages) == {1}
    assert set(messages[1]) == {"user_data"}
    assert messages[1]["user_data"]["em"][0][0].startswith("Not an e-mail address")


def test_errors_for_several_bad_events_name_each_index():
    events = [minimal(event_time="soon"), minimal(), minimal(custom_data={"currency": "EURO"})]
    with pytest.raises(ValidationError) as info:
        canonical_many_schema().load(events)
    assert set(info.value.messages) == {0, 2}


# --- EventValidationError ---------------------------------------------------------------------


def test_event_validation_error_for_a_list_names_event_and_path():
    events = [minimal(event_id="a"), minimal(event_id="b", user_data={"em": ["not-an-email"]})]
    with pytest.raises(ValidationError) as info:
        canonical_many_schema().load(events)
    error = EventValidationError(info.value.messages, many=True)
    text = str(error)
    assert text.splitlines()[0] == "1 invalid field; nothing was enqueued."
    assert "event 1: user_data.em.0: Not an e-mail address" in text
    assert "not-an-email" not in text
    assert error.messages == info.value.messages
    assert error.many is True
    assert isinstance(error, ValueError)


def test_event_validation_error_counts_fields_and_lists_each_line():
    messages = {
        0: {"event_time": ["Looks like milliseconds; send UNIX seconds (divide by 1000)."]},
        3: {"user_data": {"em": {0: ["Bad."], 2: ["Also bad."]}}},
    }
    text = str(EventValidationError(messages, many=True))
    assert text == (
        "3 invalid fields; nothing was enqueued.\n"
        "  event 0: event_time: Looks like milliseconds; send UNIX seconds (divide by 1000).\n"
        "  event 3: user_data.em.0: Bad.\n"
        "  event 3: user_data.em.2: Also bad."
    )


def test_event_validation_error_for_one_event_uses_field_paths():
    text = str(EventValidationError({"custom_data": {"currency": ["Not an ISO 4217 currency code."]}}))
    assert text == "1 invalid field; nothing was enqueued.\n  custom_data.currency: Not an ISO 4217 currency code."


def test_line_item_errors_name_the_item_and_the_field():
    event = {
        "event_name": "Purchase",
        "custom_data": {
            "contents": [
                {"id": "ok", "quantity": 1, "item_price": 2.5},
                {"id": "", "quantity": -1, "item_price": "cheap", "colour": "red"},
                {"quantity": 1.5},
                "SKU-9",
            ]
        },
    }
    with pytest.raises(ValidationError) as info:
        canonical_schema().load(event)
    errors = info.value.messages["custom_data"]["contents"]
    assert set(errors) == {1, 2, 3}
    assert set(errors[1]) == {"id", "quantity", "item_price", "colour"}
    assert errors[1]["colour"] == ["Unknown field."]
    assert set(errors[2]) == {"id", "quantity"}
    assert "_schema" in errors[3]


def test_line_items_are_normalised():
    event = {"event_name": "Purchase", "custom_data": {"contents": [{"id": 7, "quantity": 2, "item_price": 3}]}}
    loaded = canonical_schema().load(event)
    assert loaded["custom_data"]["contents"] == [{"id": "7", "quantity": 2, "item_price": 3.0}]
