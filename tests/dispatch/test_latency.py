"""Latency statistics: Welford average and deviation, EWMA estimate, timeouts."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipdispatch.dispatch import latency

rtts = st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=200)


@given(rtts)
def test_average_and_deviation_match_the_textbook_formulas(samples: list[float]) -> None:
    stats = latency.LatencyStats()
    for x in samples:
        stats.observe(x)
    assert stats.count == len(samples)
    assert math.isclose(stats.mean, statistics.fmean(samples), rel_tol=1e-9, abs_tol=1e-9)
    expected_std = statistics.pstdev(samples) if len(samples) > 1 else 0.0
    assert math.isclose(stats.std, expected_std, rel_tol=1e-6, abs_tol=1e-6)
    assert stats.maximum == max(samples)
    assert stats.last == samples[-1]


def test_estimate_moves_by_alpha_towards_each_sample() -> None:
    stats = latency.LatencyStats(alpha=0.5)
    assert stats.estimate is None
    stats.observe(0.100)
    assert stats.estimate == pytest.approx(0.100)
    stats.observe(0.300)
    assert stats.estimate == pytest.approx(0.200)
    stats.observe(0.200)
    assert stats.estimate == pytest.approx(0.200)


def test_timeouts_raise_the_estimate_but_not_the_average() -> None:
    stats = latency.LatencyStats(alpha=0.25)
    stats.observe(0.020)
    stats.observe_timeout(2.0)
    assert stats.timeouts == 1
    assert stats.mean == pytest.approx(0.020)
    assert stats.count == 1
    assert stats.estimate == pytest.approx(0.020 + 0.25 * (2.0 - 0.020))


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_alpha_must_be_a_fraction(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        latency.LatencyStats(alpha=alpha)


def test_negative_round_trips_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        latency.LatencyStats().observe(-0.001)
