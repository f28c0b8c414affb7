"""Weight slot tables: exact proportions, even spread, bounded size."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from sipdispatch.dispatch import weights

small_weights = st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=8)


@given(small_weights)
def test_each_index_appears_in_exact_proportion(ws: list[int]) -> None:
    slots = weights.slot_table(ws)
    counts = Counter(slots)
    total = sum(ws)
    if total == 0:
        assert slots == ()
        return
    for i, w in enumerate(ws):
        assert Fraction(counts[i], len(slots)) == Fraction(w, total)


@given(small_weights)
def test_slots_of_each_index_are_spread_over_the_table(ws: list[int]) -> None:
    slots = weights.slot_table(ws)
    n = len(slots)
    for i, w in enumerate(ws):
        if not w:
            continue
        share = slots.count(i) / n
        seen = 0
        for position, index in enumerate(slots, start=1):
            seen += index == i
            # Never more than one slot (plus rounding) ahead of or behind the ideal.
            assert abs(seen - share * position) <= 1.5


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12))
def test_large_weights_are_scaled_into_the_bound_keeping_everyone(ws: list[int]) -> None:
    scaled = weights.scale_weights(ws)
    assert sum(scaled) <= weights.MAX_SLOTS + len(ws)  # a few 1s may be lifted above
    assert [bool(w) for w in scaled] == [bool(w) for w in ws]
    total, new_total = sum(ws), sum(scaled)
    if total and new_total:
        # Weights too small for one slot are lifted to 1: each lift moves every share by up
        # to one slot, on top of the rounding of the entry itself.
        lifted = sum(1 for w in ws if w and w * weights.MAX_SLOTS < total)
        for w, s in zip(ws, scaled, strict=True):
            bound = 2 / weights.MAX_SLOTS + (1 + lifted) / new_total
            assert abs(s / new_total - w / total) <= bound


def test_common_divisors_are_removed() -> None:
    assert weights.scale_weights([50, 30, 20]) == [5, 3, 2]
    assert len(weights.slot_table([50, 30, 20])) == 10
