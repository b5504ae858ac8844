"""Unit tests of conversion_relay.outcomes: classing non-2xx responses and reading Retry-After."""

from __future__ import annotations

import datetime as dt

import pytest

from conversion_relay.outcomes import (
    EXCERPT_CHARS,
    Rejected,
    RetryLater,
    TooLarge,
    classify_failure,
    excerpt_of,
    parse_retry_after,
)

HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
HTTP_DATE_TS = dt.datetime(2015, 10, 21, 7, 28, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retry_later(status):
    outcome = classify_failure(status, {}, b'{"error": "busy"}')
    assert outcome == RetryLater(
        reason=f"http_{status}", status=status, retry_after_seconds=None, excerpt='{"error": "busy"}'
    )


@pytest.mark.parametrize("status", [501, 507, 520, 599])
def test_any_5xx_is_retry_later(status):
    assert isinstance(classify_failure(status, {}, b""), RetryLater)


def test_retry_after_seconds_header_is_parsed():
    outcome = classify_failure(429, {"Retry-After": "120"}, b"slow down")
    assert isinstance(outcome, RetryLater)
    assert outcome.retry_after_seconds == 120.0


def test_retry_after_with_surrounding_space_is_parsed():
    assert classify_failure(503, {"Retry-After": " 7 "}, b"").retry_after_seconds == 7.0


def test_invalid_retry_after_header_gives_none():
    outcome = classify_failure(503, {"Retry-After": "soon-ish"}, b"")
    assert isinstance(outcome, RetryLater)
    assert outcome.retry_after_seconds is None


def test_413_is_too_large():
    assert classify_failure(413, {}, b"payload too large") == TooLarge(status=413, excerpt="payload too large")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_permanent_client_errors_are_rejected(status):
    outcome = classify_failure(status, {"Retry-After": "10"}, b'{"error":"nope"}')
    assert outcome == Rejected(reason=f"http_{status}", status=status, excerpt='{"error":"nope"}')


def test_parse_retry_after_seconds():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("1.5") == 1.5


def test_parse_retry_after_negative_seconds_is_zero():
    assert parse_retry_after("-30") == 0.0


def test_parse_retry_after_http_date_relative_to_now():
    assert parse_retry_after(HTTP_DATE, now=HTTP_DATE_TS - 90) == pytest.approx(90.0)


def test_parse_retry_after_http_date_in_the_past_is_zero():
    assert parse_retry_after(HTTP_DATE, now=HTTP_DATE_TS + 3600) == 0.0


def test_parse_retry_after_http_date_with_numeric_zone():
    # 09:28 at +02:00 is 07:28 UTC.
    assert parse_retry_after("Wed, 21 Oct 2015 09:28:00 +0200", now=HTTP_DATE_TS - 10) == pytest.approx(10.0)


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "Wed, 99 Foo 2015", "12 parsecs"])
def test_parse_retry_after_invalid_is_none(value):
    assert parse_retry_after(value, now=HTTP_DATE_TS) is None


def test_excerpt_collapses_whitespace():
    body = b"  <html>\n  <body>\tService \r\n Unavailable  </body>\n</html>\n"
    assert excerpt_of(body) == "<html> <body> Service Unavailable </body> </html>"
    assert classify_failure(503, {}, body).excerpt == "<html> <body> Service Unavailable </body> </html>"


def test_excerpt_is_truncated_to_at_most_300_chars():
    body = ("word " * 1000).encode()
    excerpt = classify_failure(500, {}, body).excerpt
    assert EXCERPT_CHARS == 300
    assert len(excerpt) == 300
    assert excerpt.endswith("…")
    assert excerpt.startswith("word word")


def test_excerpt_at_exactly_the_limit_is_kept_whole():
    body = b"x" * 300
    assert excerpt_of(body) == "x" * 300


def test_excerpt_of_invalid_utf8_is_decoded_leniently():
    assert excerpt_of(b"bad \xff byte") == "bad \ufffd byte"


def test_excerpt_of_str():
    assert excerpt_of("a\n\nb") == "a b"
