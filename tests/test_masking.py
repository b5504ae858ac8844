"""Vendor response excerpts and per-event errors are stored masked: no e-mail address, phone
number, IP address (v4 or v6) or token from a vendor's answer reaches Redis or a log line --
checked on ``excerpt_of`` directly and through the sandbox, a real drain and a real Redis."""

from __future__ import annotations

import uuid

import pytest

from conversion_relay.engine.drain import Drainer
from conversion_relay.engine.runtime import Runtime
from conversion_relay.masking import without_secrets
from conversion_relay.outcomes import EXCERPT_CHARS, SCANNED_CHARS_PER_EXCERPT_CHAR, classify_failure, excerpt_of
from conversion_relay.store.deadletter import DeadLetter
from conversion_relay.store.keys import GROUP
from conversion_relay.store.lease import Leases
from conversion_relay.store.waiting import WaitingBatch
from tests.support import wait_for

PERSONAL = {
    "email": ["jane.doe+shop@example.org", "J.Doe@Mail.Example.co.uk"],
    "phone": ["+49 151 12345678", "(030) 123-4567", "015112345678", "+1 (555) 010-9999"],
    "ip": ["203.0.113.9", "2001:db8::7", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:192.0.2.1", "fe80::1%eth0"],
    "secret": [
        "Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "api_key=abcdef0123456789",
        '"token": "t0k3n-value-xyz"',
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
        "x-api-key: 0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        # A vendor's own credential header, masked without the masker knowing the vendor.
        "tracify-token: q1w2e3r4",
        "X-Acme-Token=zz99yy88",
    ],
}
#: What must not survive of each value above (the token without its scheme or name).
SECRETS = ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "abcdef0123456789", "t0k3n-value-xyz", "eyJhbGciOiJIUzI1NiJ9",
           "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "q1w2e3r4", "zz99yy88"]  # fmt: skip
BODY = (
    '{"error": "rejected", "detail": "user jane.doe+shop@example.org (+49 151 12345678) from 203.0.113.9 '
    '/ 2001:db8::7 sent Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc", "request": "api_key=abcdef0123456789"}'
)
LEAKS = ["jane.doe", "example.org", "12345678", "203.0.113.9", "2001:db8", *SECRETS]


def values(kind: str) -> list[str]:
    return SECRETS if kind == "secret" else PERSONAL[kind]


@pytest.mark.parametrize("kind", sorted(PERSONAL))
def test_each_kind_of_value_is_masked_in_an_excerpt(kind):
    for text in PERSONAL[kind]:
        body = f'{{"error": "refused", "value": "{text}", "status": 400}}'.encode()
        excerpt = excerpt_of(body)
        assert f"[{kind}]" in excerpt, (text, excerpt)
        for value in values(kind):
            assert value not in excerpt, (text, excerpt)
        assert '"error": "refused"' in excerpt and '"status": 400' in excerpt
        assert excerpt_of(excerpt) == excerpt  # masking is idempotent


def test_ordinary_error_text_is_left_readable():
    text = '{"error": "event_name: Missing data for required field.", "code": 422, "at": "2024-06-21T12:00:00Z"}'
    assert excerpt_of(text) == text
    assert excerpt_of("Bad Request: data: at most 1000 events per request, got 1200") == (
        "Bad Request: data: at most 1000 events per request, got 1200"
    )
    assert (
        excerpt_of('{"message":"access token missing or invalid"}') == '{"message":"access token missing or invalid"}'
    )
    assert excerpt_of("invalid token a1b2c3d4e5") == "invalid token [secret]"


def test_a_value_cut_where_the_body_is_cut_is_not_left_half_visible():
    """Only the start of a body is read (``SCANNED_CHARS_PER_EXCERPT_CHAR`` per character of
    excerpt); an address cut there is no longer an address, so what is left of it is dropped
    rather than kept unmasked -- even when blank space before it shrinks to nothing."""
    address = "jane.doe@example.org"
    scanned = EXCERPT_CHARS * SCANNED_CHARS_PER_EXCERPT_CHAR
    for kept in range(1, len(address)):
        body = (" " * (scanned - kept) + address + " and more").encode()
        excerpt = excerpt_of(body)
        assert excerpt in ("…", "[email]…"), (kept, excerpt)
        assert "jane" not in excerpt and len(excerpt) <= EXCERPT_CHARS


def test_failure_outcomes_carry_the_masked_excerpt():
    for status in (400, 413, 503):
        outcome = classify_failure(status, {}, BODY.encode())
        for leak in LEAKS:
            assert leak not in outcome.excerpt, (status, leak)
        assert "[email]" in outcome.excerpt and "[ip]" in outcome.excerpt


def drain_once(stack, name: str) -> None:
    rt = Runtime(stack.settings)
    token = uuid.uuid4().hex
    assert Leases(rt.redis, rt.keys).acquire(name, 0, token, 10.0)
    Drainer(rt, name, token).run()


def purchase(event_id: str) -> dict[str, object]:
    return {"event_name": "Purchase", "event_id": event_id, "custom_data": {"value": 5.0, "currency": "EUR"}}


def stored_text(stack) -> str:
    """Every hash value the relay's data database holds (letters and waiting batches)."""
    found = []
    for key in stack.redis.scan_iter(count=1000):
        if stack.redis.type(key) == b"hash":
            found += [v.decode(errors="replace") for v in stack.redis.hvals(key)]
    return "\n".join(found)


def test_a_refusing_vendor_s_answer_is_stored_masked_in_the_dead_letter(make_stack, gravity):
    stack = make_stack()
    stack.redis.xgroup_create(stack.keys.stream("gravity"), GROUP, id="0", mkstream=True)
    gravity.configure(statuses=[{"status": 400, "body": BODY}])
    stack.relay.enqueue([purchase("m-1")], destinations=["gravity"])
    drain_once(stack, "gravity")
    (letter,) = stack.dead_letters()
    assert letter.status == 400 and "[email]" in letter.excerpt and "[phone]" in letter.excerpt
    text = stored_text(stack)
    for leak in LEAKS:
        assert leak not in text, leak


def test_a_failing_vendor_s_answer_is_stored_masked_in_the_waiting_batch(make_stack, gravity):
    stack = make_stack()
    stack.redis.xgroup_create(stack.keys.stream("gravity"), GROUP, id="0", mkstream=True)
    gravity.configure(statuses=[{"status": 503, "body": BODY}])
    stack.relay.enqueue([purchase("m-2")], destinations=["gravity"])
    drain_once(stack, "gravity")
    (batch,) = wait_for(lambda: stack.admin.waiting.list("gravity"), what="the waiting batch")
    assert batch.last_status == 503 and "[ip]" in batch.last_excerpt
    text = stored_text(stack)
    for leak in LEAKS:
        assert leak not in text, leak


def test_whatever_writes_a_letter_or_batch_the_vendor_s_words_are_masked_on_the_way_to_redis(make_stack):
    """Per-event errors come from adapters (not through ``excerpt_of``); the stores mask them."""
    stack = make_stack()
    letter = DeadLetter(
        "gravity", "gravity_capi", "", ["{}"], "vendor_rejected_event", 200, BODY, 1, 1.0, 1.0,
        errors={"0": "user_data.em: jane.doe+shop@example.org is not hashed; from 203.0.113.9"},
    )  # fmt: skip
    batch = WaitingBatch("gravity", "", ["{}"], 1, 1.0, 1.0, 1.0, last_status=503, last_excerpt=BODY)
    pipe = stack.redis.pipeline()
    stack.admin.letters.add(pipe, letter)
    stack.admin.waiting.park(pipe, batch)
    pipe.execute()
    text = stored_text(stack)
    for leak in LEAKS:
        assert leak not in text, leak
    stored = stack.admin.letters.get(letter.id)
    assert stored.errors == {"0": "user_data.em: [email] is not hashed; from [ip]"}


def test_a_configured_key_is_masked_whole_and_where_the_excerpt_cuts_it():
    """A key of no recognisable shape (a UUID) echoed by the vendor: masked wherever it stands,
    also when the excerpt ends inside it."""
    key = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert without_secrets(f"bad key {key}", [key]) == "bad key [secret]"
    for lead in range(EXCERPT_CHARS - 30, EXCERPT_CHARS):
        excerpt = excerpt_of("x" * lead + " " + key + " rest")
        assert excerpt.endswith("…")
        cleaned = without_secrets(excerpt, [key])
        assert key[:4] not in cleaned, (lead, cleaned)
