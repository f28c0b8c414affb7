"""Round-trip latency statistics of one destination.

Fed by probe replies and, when the core measures them, by real transactions.
All times are seconds (floats); the control API converts for display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_ALPHA", "LatencyStats"]

# Weight of a new sample in the moving estimate: about the last 5 samples
# dominate, so a destination that turns slow is noticed within a few probes.
DEFAULT_ALPHA: Final = 0.2


@dataclass(slots=True)
class LatencyStats:
    """Average and deviation (Welford), a moving estimate (EWMA), max, timeouts."""

    alpha: float = DEFAULT_ALPHA
    count: int = 0
    mean: float = 0.0
    _m2: float = 0.0
    maximum: float = 0.0
    last: float | None = None
    estimate: float | None = None
    timeouts: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    @property
    def std(self) -> float:
        """Population standard deviation of the samples (0 with fewer than two)."""
        return math.sqrt(self._m2 / self.count) if self.count > 1 else 0.0

    def observe(self, rtt: float) -> None:
        """Record one measured round trip."""
        if rtt < 0 or math.isnan(rtt):
            raise ValueError(f"round-trip time must be >= 0, got {rtt}")
        # Welford's update: numerically stable for long-running counters.
        self.count += 1
        delta = rtt - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (rtt - self.mean)
        self.maximum = max(self.maximum, rtt)
        self.last = rtt
        self._smooth(rtt)

    def observe_timeout(self, timeout: float) -> None:
        """Record a request that got no answer within `timeout` seconds.

        The wait is at least `timeout`, so it feeds the moving estimate (a
        destination that times out must not look fast to the latency
        algorithm) but not the average of real round trips.
        """
        self.timeouts += 1
        self._smooth(timeout)

    def _smooth(self, value: float) -> None:
        if self.estimate is None:
            self.estimate = value
        else:
            self.estimate += self.alpha * (value - self.estimate)
