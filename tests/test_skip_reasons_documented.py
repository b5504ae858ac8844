"""Every skip reason an adapter can give is in docs/mapping.md, under that vendor (issue 9):
an operator who sees ``skipped:<reason>`` in ``status`` finds what it means."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from conversion_relay.client.explain import explain_one
from conversion_relay.sandbox import sandbox_classes
from conversion_relay.schemas.canonical import BEHAVIOUR_EVENT_NAMES, STANDARD_EVENT_NAMES, canonical_schema
from conversion_relay.vendors import adapter_classes, adapter_for
from conversion_relay.vendors.base import VendorAdapter
from tests.support import destination_settings

MAPPING = Path(__file__).resolve().parents[1] / "docs" / "mapping.md"
KEY_ENV = "TEST_SKIP_REASONS_KEY"

FULL_USER = {
    "external_id": ["42"],
    "em": ["a@example.com"],
    "client_ip_address": "203.0.113.7",
    "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    "reco_cookie_id": "c-1",
    "gravity_field_user_id": "slid-1",
}
FULL_DATA = {
    "value": 10.0,
    "currency": "EUR",
    "order_id": "o-1",
    "contents": [{"id": "SKU-1", "quantity": 1, "item_price": 10.0}],
    "search_string": "shoes",
}


def variants() -> list[dict[str, Any]]:
    """Each event name, complete and with each thing a vendor may need taken away."""
    events = []
    names = (*STANDARD_EVENT_NAMES, *BEHAVIOUR_EVENT_NAMES, "SomethingCustom")
    for name, drop_user, drop_data, url in itertools.product(
        names, [None, *FULL_USER], [None, "all", *FULL_DATA], ["https://shop.example/p", None, "/relative"]
    ):
        user = {k: v for k, v in FULL_USER.items() if k != drop_user}
        data = {} if drop_data == "all" else {k: v for k, v in FULL_DATA.items() if k != drop_data}
        event = {
            "event_name": name,
            "event_time": 1718973400,
            "event_id": "e-1",
            "user_data": user,
            "custom_data": data,
        }
        if url:
            event["event_source_url"] = url
        events.append(event)
    return events


def reasons_of(cls: type[VendorAdapter]) -> set[str]:
    """The reasons the drain's path (skip_events, the adapter's mapping) gives for the corpus."""
    options = sandbox_classes()[cls.vendor].destination_options
    table = {"vendor": cls.vendor, "api_key_env": KEY_ENV, "base_url": "http://127.0.0.1:9", **options}
    dest = destination_settings(cls.default_destination_name, table, **{KEY_ENV: "k"})
    a, schema = adapter_for(dest), canonical_schema()
    shown = [explain_one(dest, a, schema.load(copy.deepcopy(event))) for event in variants()]
    return {s.reason for s in shown if s.action == "skip"}


def documented_for(title: str) -> set[str]:
    """The reasons docs/mapping.md gives for a vendor: the shared table's rows for "all" or the
    vendor, and the vendor's own section or bullet."""
    text = MAPPING.read_text()
    name = " ".join(title.split()[:2])
    found: set[str] = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].startswith("`") and ("all" in cells[2] or name in cells[2]):
            found |= set(re.findall(r"`(\w+)`", cells[1]))
    own = re.search(rf"^## {re.escape(name)} skip reasons$(.*?)^## ", text, re.M | re.S)
    for line in own.group(1).splitlines() if own else ():
        if line.startswith("| `"):
            found |= set(re.findall(r"`(\w+)`", line.split("|")[1]))
    bullet = re.search(rf"^- \*\*{re.escape(name)}\*\*:(.*?)(?=^- |^$)", text, re.M | re.S)
    if bullet:
        found |= set(re.findall(r"`(\w+)`", bullet.group(1)))
    return found


@pytest.mark.parametrize("cls", adapter_classes().values(), ids=lambda c: c.vendor)
def test_every_skip_reason_the_adapter_gives_is_documented_for_its_vendor(cls: type[VendorAdapter]) -> None:
    found = reasons_of(cls)
    assert found, f"{cls.vendor}: the corpus triggers no skip; it no longer exercises the adapter"
    missing = found - documented_for(cls.title)
    assert not missing, f"{cls.vendor} skips with {sorted(missing)}, which docs/mapping.md does not list for it"
