"""Precomputed weight slot tables (the idea of Kamailio's `dp_init_weights`).

A weighted pick walks a cursor over a table where each destination appears
in proportion to its weight, so every full turn of the cursor hands out
exactly the configured shares, with no random drift on small volumes and
no per-call arithmetic beyond an index.

Kamailio fills 100 slots by percentage and shuffles them. Here the table is
as long as the sum of the weights (divided by their common divisor, and
scaled down to at most `MAX_SLOTS`), and each destination's slots are spread
evenly over it instead of shuffled (smooth weighted round-robin): shares stay
even within a turn (weights 5:1:1 give ``a a b a c a a``), and the table is
the same on every replica.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

__all__ = ["MAX_SLOTS", "scale_weights", "slot_table"]

# Bounds the table (and its build time) when weights are large or coprime;
# 1000 slots keep each share within 0.1 % of the configured one.
MAX_SLOTS: Final = 1000


def scale_weights(weights: Sequence[int], max_slots: int = MAX_SLOTS) -> list[int]:
    """Reduce `weights` to small integers with the same proportions.

    Divides by the common divisor; if the sum still exceeds `max_slots`,
    scales down by largest remainder, keeping every positive weight >= 1.
    """
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    divisor = math.gcd(*weights) if any(weights) else 1
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    if total <= max_slots:
        return reduced
    exact = [w * max_slots / total for w in reduced]
    scaled = [max(1, math.floor(x)) if w else 0 for w, x in zip(reduced, exact, strict=True)]
    spare = max_slots - sum(scaled)
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - scaled[i], reverse=True)
    for i in by_remainder[: max(0, spare)]:
        if reduced[i]:
            scaled[i] += 1
    return scaled


def slot_table(weights: Sequence[int], max_slots: int = MAX_SLOTS) -> tuple[int, ...]:
    """Indexes into `weights`, each appearing in proportion to its weight.

    Empty when every weight is 0. Built by smooth weighted round-robin (each
    step every entry gains its weight and the richest one, ties to the lowest
    index, pays the total and takes the slot), which keeps every entry within
    one slot of its ideal share at every point of the table, in O(T * n).
    """
    scaled = scale_weights(weights, max_slots)
    total = sum(scaled)
    credit = [0] * len(scaled)
    slots: list[int] = []
    for _ in range(total):
        for i, w in enumerate(scaled):
            credit[i] += w
        chosen = max(range(len(scaled)), key=credit.__getitem__)
        credit[chosen] -= total
        slots.append(chosen)
    return tuple(slots)
