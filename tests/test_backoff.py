"""Unit tests of conversion_relay.engine.backoff: capped exponential backoff with full jitter."""

from __future__ import annotations

import random

import pytest

from conversion_relay.engine.backoff import compute_backoff, retry_delay

ALMOST_ONE = 0.999999


def top(attempt: int, base: float = 1.0, cap: float = 600.0) -> float:
    return compute_backoff(attempt, base_seconds=base, cap_seconds=cap, rand=lambda: ALMOST_ONE)


def test_window_doubles_per_attempt_until_the_cap():
    got = [top(attempt) for attempt in range(1, 13)]
    expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert got == pytest.approx([w * ALMOST_ONE for w in expected])


def test_window_scales_with_base():
    assert [top(a, base=0.25, cap=100) for a in (1, 2, 3)] == pytest.approx(
        [0.25 * ALMOST_ONE, 0.5 * ALMOST_ONE, 1.0 * ALMOST_ONE]
    )


def test_cap_below_base_caps_the_first_attempt_too():
    assert top(1, base=10, cap=3) == pytest.approx(3 * ALMOST_ONE)


def test_huge_attempt_number_stays_at_cap_without_overflow():
    assert top(10_000) == pytest.approx(600 * ALMOST_ONE)
    assert top(64) == pytest.approx(600 * ALMOST_ONE)


def test_docstring_example():
    assert compute_backoff(3, base_seconds=1, cap_seconds=600, rand=lambda: 0.5) == 2.0


@pytest.mark.parametrize("attempt", [1, 2, 5, 30])
def test_zero_draw_gives_zero_wait_full_jitter(attempt):
    assert compute_backoff(attempt, base_seconds=1, cap_seconds=600, rand=lambda: 0.0) == 0.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_below_one_is_an_error(attempt):
    with pytest.raises(ValueError, match="counts from 1"):
        compute_backoff(attempt, base_seconds=1, cap_seconds=600)
    with pytest.raises(ValueError):
        retry_delay(attempt, None, base_seconds=1, cap_seconds=600, max_retry_after_seconds=3600)


def test_seeded_draws_stay_within_window_and_cover_it():
    rng = random.Random(20240621)
    for attempt in range(1, 16):
        window = min(600.0, 1.0 * 2 ** (attempt - 1))
        draws = [compute_backoff(attempt, base_seconds=1, cap_seconds=600, rand=rng.random) for _ in range(300)]
        assert all(0.0 <= d <= window for d in draws)
        # Full jitter: the draws spread over the whole window, not just its top.
        assert min(draws) < 0.1 * window
        assert max(draws) > 0.9 * window


def test_retry_delay_without_retry_after_is_the_backoff():
    delay = retry_delay(4, None, base_seconds=1, cap_seconds=600, max_retry_after_seconds=3600, rand=lambda: 0.5)
    assert delay == 4.0


def test_retry_after_larger_than_backoff_wins():
    delay = retry_delay(1, 30.0, base_seconds=1, cap_seconds=600, max_retry_after_seconds=3600, rand=lambda: ALMOST_ONE)
    assert delay == 30.0


def test_backoff_larger_than_retry_after_wins():
    delay = retry_delay(8, 5.0, base_seconds=1, cap_seconds=600, max_retry_after_seconds=3600, rand=lambda: 0.5)
    assert delay == 64.0


def test_retry_after_is_capped_at_max_retry_after():
    delay = retry_delay(1, 86_400.0, base_seconds=1, cap_seconds=600, max_retry_after_seconds=3600, rand=lambda: 0.0)
    assert delay == 3600.0


def test_retry_after_zero_does_not_shorten_backoff():
    delay = retry_delay(3, 0.0, base_seconds=1, cap_seconds=600, max_retry_after_seconds=3600, rand=lambda: 0.5)
    assert delay == 2.0
