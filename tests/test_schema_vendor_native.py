"""Unit tests of the OpenAPI schema builder (conversion_relay.schemas.openapi), the Gravity Field
document built with it (conversion_relay.schemas.gravity_field) and the canonical fields the new
vendors read (conversion_relay.schemas.canonical)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from conversion_relay.schemas.canonical import BEHAVIOUR_EVENT_NAMES, PAGE_TYPES, canonical_schema
from conversion_relay.schemas.gravity_field import EVENT_TYPES, event_field, event_request_schema, page_request_schema
from conversion_relay.schemas.openapi import AnyOf, Builder, StrictNumber, load_document

FIXTURES = Path(__file__).parent / "fixtures"

#: A small document using every construct the builder supports.
DOCUMENT: dict[str, Any] = {
    "components": {
        "schemas": {
            "order": {
                "type": "object",
                "required": ["id", "lines"],
                "properties": {
                    "id": {"type": "string"},
                    "status": {"type": "string", "enum": ["OPEN", "PAID"]},
                    "total": {"type": "number"},
                    "paid": {"type": "boolean"},
                    "lines": {"type": "array", "items": {"$ref": "#/components/schemas/line"}},
                    "owner": {"$ref": "#/components/schemas/ownerAlias"},
                    "tags": {"type": "array"},
                    "note": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "extra": {"type": "null"},
                },
            },
            "line": {
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
            },
            "ownerAlias": {"$ref": "#/components/schemas/owner"},
            "owner": {"properties": {"name": {"type": "string"}}, "required": ["name"]},
        }
    }
}


def order_schema() -> Any:
    builder = Builder(DOCUMENT)
    return builder.schema({"$ref": "#/components/schemas/order"}, "Order")


def order(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"id": "o-1", "lines": [{"sku": "A", "quantity": 1}], "owner": {"name": "n"}}
    value.update(changes)
    return value


def errors_of(schema: Any, value: Any) -> Any:
    with pytest.raises(ValidationError) as info:
        schema.load(value)
    return info.value.messages


def field_fixture() -> dict[str, Any]:
    return json.loads((FIXTURES / "gravity_field" / "purchase_request.json").read_text())


# --- conversion_relay.schemas.openapi: the builder ---------------------------------------------------------------


def test_builder_resolves_refs_including_a_chain_of_refs():
    builder = Builder(DOCUMENT)
    assert builder.resolve({"$ref": "#/components/schemas/ownerAlias"}) == DOCUMENT["components"]["schemas"]["owner"]
    loaded = order_schema().load(order())
    assert loaded == order()


def test_builder_enforces_required_properties_at_every_level():
    assert errors_of(order_schema(), {"owner": {}, "lines": [{"sku": "A"}]}) == {
        "id": ["Missing data for required field."],
        "owner": {"name": ["Missing data for required field."]},
        "lines": {0: {"quantity": ["Missing data for required field."]}},
    }


def test_builder_enforces_string_enums():
    assert order_schema().load(order(status="PAID"))["status"] == "PAID"
    assert "status" in errors_of(order_schema(), order(status="paid"))


@pytest.mark.parametrize("quantity", [1.5, "1", True, None])
def test_builder_integer_refuses_floats_strings_booleans_and_null(quantity):
    errors = errors_of(order_schema(), order(lines=[{"sku": "A", "quantity": quantity}]))
    assert "quantity" in errors["lines"][0]


@pytest.mark.parametrize("total", [3, 2.5, 0])
def test_builder_number_accepts_integers_and_floats_unchanged(total):
    loaded = order_schema().load(order(total=total))["total"]
    assert loaded == total
    assert type(loaded) is type(total)


@pytest.mark.parametrize("total", ["2.5", "3", True, None, [1]])
def test_builder_number_refuses_numeric_strings_and_booleans(total):
    assert "total" in errors_of(order_schema(), order(total=total))


def test_strict_number_refuses_what_json_schema_does_not_call_a_number():
    field = StrictNumber()
    assert field.deserialize(7) == 7
    assert field.deserialize(7.25) == 7.25
    for value in ("7", True, False, {"v": 1}):
        with pytest.raises(ValidationError, match="Not a number"):
            field.deserialize(value)


def test_builder_keeps_unknown_properties_at_every_level():
    value = order(custom="x", lines=[{"sku": "A", "quantity": 1, "size": "L"}], owner={"name": "n", "age": 3})
    loaded = order_schema().load(value)
    assert loaded["custom"] == "x"
    assert loaded["lines"][0]["size"] == "L"
    assert loaded["owner"]["age"] == 3


def test_builder_unknown_types_take_anything():
    loaded = order_schema().load(order(extra={"anything": True}))
    assert loaded["extra"] == {"anything": True}
    assert order_schema().load(order(extra=[1, "a"]))["extra"] == [1, "a"]


def test_builder_array_without_items_takes_objects():
    assert order_schema().load(order(tags=[{"b": 1}, {}]))["tags"] == [{"b": 1}, {}]


def test_builder_array_without_items_takes_any_item():
    loaded = order_schema().load(order(tags=[1, "a", {"b": None}]))
    assert loaded["tags"] == [1, "a", {"b": None}]


def test_builder_any_of_takes_the_first_alternative_that_matches():
    assert order_schema().load(order(note=5))["note"] == 5
    assert order_schema().load(order(note="five"))["note"] == "five"
    errors = errors_of(order_schema(), order(note=[5]))
    assert errors["note"]["_anyOf"] == ["Matches none of the allowed shapes."]
    assert "_closest" in errors["note"]


def test_any_of_choose_picks_the_alternative_outright():
    builder = Builder(DOCUMENT)
    line = builder.field({"$ref": "#/components/schemas/line"})
    owner = builder.field({"$ref": "#/components/schemas/owner"})
    field = AnyOf([line, owner], choose=lambda value: owner if "name" in value else None)
    assert field.deserialize({"name": "n", "sku": 1}) == {"name": "n", "sku": 1}
    with pytest.raises(ValidationError) as info:
        field.deserialize({"name": 5})
    assert info.value.messages == {"name": ["Not a valid string."]}


# --- conversion_relay.schemas.gravity_field: the vendor's document -----------------------------------------------


def test_field_document_has_no_description_keys():
    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for value in node.values() for k in keys(value)}
        if isinstance(node, list):
            return {k for value in node for k in keys(value)}
        return set()

    document = load_document("gravity_field_openapi.json")
    assert "description" not in keys(document)
    assert "properties" in keys(document)


def test_field_document_lists_the_fourteen_event_schemas():
    document = load_document("gravity_field_openapi.json")
    schema = document["paths"]["/ssapi/event"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = [alternative["$ref"].rsplit("/", 1)[1] for alternative in schema["properties"]["events"]["items"]["anyOf"]]
    assert len(refs) == 14
    assert sorted(refs) == sorted([*EVENT_TYPES.values(), "customEvent"])
    assert all(name in document["components"]["schemas"] for name in refs)
    assert sorted(schema["required"]) == ["context", "events", "session", "user"]


def test_every_predefined_event_type_requires_event_type_and_the_custom_event_nothing():
    schemas = load_document("gravity_field_openapi.json")["components"]["schemas"]
    for name in EVENT_TYPES.values():
        assert "eventType" in schemas[name]["properties"]["properties"]["required"], name
    assert "required" not in schemas["customEvent"]["properties"]["properties"]


@pytest.mark.parametrize("page_type", PAGE_TYPES)
def test_field_page_type_accepts_the_upper_case_names(page_type):
    document = field_fixture()
    document["context"]["page"]["type"] = page_type
    assert event_request_schema().load(document)["context"]["page"]["type"] == page_type


@pytest.mark.parametrize("page_type", ["other", "Product", "LANDING", ""])
def test_field_page_type_refuses_other_spellings(page_type):
    document = field_fixture()
    document["context"]["page"]["type"] = page_type
    assert "type" in errors_of(event_request_schema(), document)["context"]["page"]


@pytest.mark.parametrize("missing", ["type", "data", "location"])
def test_field_page_requires_type_data_and_location(missing):
    document = field_fixture()
    del document["events"]
    del document["context"]["page"][missing]
    assert errors_of(page_request_schema(), document) == {
        "context": {"page": {missing: ["Missing data for required field."]}}
    }


def test_field_cart_quantity_must_be_an_integer_and_value_a_number():
    document = field_fixture()
    document["events"][0]["properties"]["cart"][0]["quantity"] = 1.0
    document["events"][0]["properties"]["value"] = "100"
    errors = errors_of(event_request_schema(), document)["events"][0]["properties"]
    assert set(errors) == {"cart", "value"}
    assert errors["value"] == ["Not a number."]


def test_field_event_request_keeps_unknown_properties_but_refuses_unknown_top_level_keys():
    document = field_fixture()
    document["context"]["page"]["section"] = "checkout"
    document["events"][0]["properties"]["coupon"] = "X"
    loaded = event_request_schema().load(document)
    assert loaded["context"]["page"]["section"] == "checkout"
    assert loaded["events"][0]["properties"]["coupon"] == "X"
    document["test_event_code"] = "T"
    assert errors_of(event_request_schema(), document) == {"test_event_code": ["Unknown field."]}


@pytest.mark.parametrize(
    ("event_type", "required"),
    [
        ("add-to-cart-v1", {"value", "quantity", "productId"}),
        ("purchase-v1", {"value", "uniqueTransactionId", "cart"}),
        ("remove-from-cart-v1", {"value", "productId"}),
        ("sync-cart-v1", {"cart"}),
        ("add-to-wishlist-v1", {"productId"}),
        ("change-attribute-v1", {"attributeType", "attributeValue"}),
        ("filter-items-v1", {"filterType"}),
        ("keyword-search-v1", {"keywords"}),
        ("enter-promo-code-v1", {"code"}),
        ("sort-items-v1", {"sortBy", "sortOrder"}),
        ("newsletter-subscription-v1", set()),
        ("signup-v1", set()),
        ("login-v1", set()),
    ],
)
def test_event_field_checks_each_predefined_event_by_its_event_type(event_type, required):
    field = event_field()
    try:
        field.deserialize({"name": "x", "properties": {"eventType": event_type}})
        missing: set[str] = set()
    except ValidationError as exc:
        missing = set(exc.messages["properties"])
    assert missing == required


def test_event_field_takes_custom_events_of_any_shape():
    field = event_field()
    assert field.deserialize({"name": "Clicked", "properties": {"value": 1, "anything": [1]}})["name"] == "Clicked"
    assert field.deserialize({"properties": {"eventType": "my-own-v1"}}) == {"properties": {"eventType": "my-own-v1"}}
    with pytest.raises(ValidationError):
        field.deserialize({"name": "Clicked", "properties": {"value": "1"}})


# --- conversion_relay.schemas.canonical: fields the new vendors read ---------------------------------------------


def load(event: dict[str, Any]) -> dict[str, Any]:
    return canonical_schema().load(copy.deepcopy({"event_name": "Lead", "event_time": 1718973400, **event}))


def load_errors(event: dict[str, Any]) -> Any:
    with pytest.raises(ValidationError) as info:
        load(event)
    return info.value.messages


@pytest.mark.parametrize(("given", "stored"), [("product", "PRODUCT"), ("Cart", "CART"), ("HOMEPAGE", "HOMEPAGE")])
def test_page_type_is_upper_cased(given, stored):
    assert load({"page": {"type": given}})["page"] == {"type": stored}


def test_page_takes_location_referrer_language_and_data():
    page = {"type": "search", "location": "/s", "referrer": "https://a.example/", "language": "de_DE", "data": ["q"]}
    assert load({"page": page})["page"] == {**page, "type": "SEARCH"}


@pytest.mark.parametrize(
    ("page", "key"),
    [({"type": "landing"}, "type"), ({"type": 3}, "type"), ({"url": "x"}, "url"), ({"data": "SKU-1"}, "data")],
)
def test_page_refuses_unknown_types_and_keys(page, key):
    assert key in load_errors({"page": page})["page"]


def test_null_page_is_left_out():
    assert "page" not in load({"page": None})


@pytest.mark.parametrize(
    ("given", "stored"),
    [("2001:DB8::0001", "2001:db8::1"), (" 203.0.113.7 ", "203.0.113.7"), ("2001:0db8:0000::1", "2001:db8::1")],
)
def test_client_ip_address_is_normalised(given, stored):
    assert load({"user_data": {"client_ip_address": given}})["user_data"]["client_ip_address"] == stored


@pytest.mark.parametrize("value", ["300.1.1.1", "localhost", "2001:db8::g", "", 203])
def test_invalid_client_ip_address_is_refused(value):
    errors = load_errors({"user_data": {"client_ip_address": value}})
    assert "client_ip_address" in errors["user_data"]


def test_browser_id_is_kept():
    assert load({"user_data": {"browser_id": "b-1"}})["user_data"]["browser_id"] == "b-1"


def test_behaviour_details_are_kept_in_custom_data():
    custom = {
        "search_string": "red shoes",
        "promo_code": "X1",
        "filter_type": "color",
        "filter_value": "red",
        "sort_by": "price",
        "sort_order": "DESC",
        "attribute_type": "size",
        "attribute_value": "XL",
    }
    assert load({"custom_data": custom})["custom_data"] == custom


@pytest.mark.parametrize("value", ["ASC", "DESC"])
def test_sort_order_takes_asc_and_desc(value):
    assert load({"custom_data": {"sort_order": value}})["custom_data"]["sort_order"] == value


@pytest.mark.parametrize("value", ["asc", "Desc", "up", 1])
def test_sort_order_refuses_anything_else(value):
    assert "sort_order" in load_errors({"custom_data": {"sort_order": value}})["custom_data"]


@pytest.mark.parametrize("value", ["red", 30, 12.5, 0])
def test_filter_value_takes_a_string_or_a_number(value):
    assert load({"custom_data": {"filter_value": value}})["custom_data"]["filter_value"] == value


@pytest.mark.parametrize("value", [True, False, [1], {"min": 1}, math.nan, math.inf], ids=repr)
def test_filter_value_refuses_booleans_containers_and_non_finite_numbers(value):
    assert "filter_value" in load_errors({"custom_data": {"filter_value": value}})["custom_data"]


def test_filter_value_null_is_refused():
    assert "filter_value" in load_errors({"custom_data": {"filter_value": None}})["custom_data"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("pageview", "PageView"),
        ("PAGEVIEW", "PageView"),
        ("viewcontent", "ViewContent"),
        ("search", "Search"),
        ("addtowishlist", "AddToWishlist"),
        ("removeFromCart", "RemoveFromCart"),
        ("LOGIN", "Login"),
        ("newslettersignup", "NewsletterSignup"),
        ("applypromocode", "ApplyPromoCode"),
        ("filteritems", "FilterItems"),
        ("sortitems", "SortItems"),
        ("changeattribute", "ChangeAttribute"),
    ],
)
def test_behaviour_event_names_are_normalised_case_insensitively(given, stored):
    assert load({"event_name": given})["event_name"] == stored


def test_every_behaviour_name_round_trips_in_lower_case():
    for name in BEHAVIOUR_EVENT_NAMES:
        assert load({"event_name": name.lower()})["event_name"] == name


def test_unknown_event_names_keep_their_spelling():
    assert load({"event_name": "page_view"})["event_name"] == "page_view"
