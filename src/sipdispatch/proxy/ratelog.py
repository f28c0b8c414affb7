"""Logging what the network sends without letting the network write the log.

Anything a peer controls (a Call-ID, a header value in an error message) is ``sanitise``-d:
cut to a bounded length, every byte outside printable ASCII escaped, so that a log line is one
line and cannot forge another. ``RateLimitedLog`` lets a burst of bad messages write a few
lines per interval and then one line saying how many were left out, whatever the packet rate.
``LogThrottle`` does the same per kind of line (a routing refusal by reason and route, a missing
hash key by set): one line per kind and interval, saying how many it stands for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LogThrottle", "RateLimitedLog", "sanitise"]

#: characters of peer-controlled text kept in a log line
SANITISED_LENGTH = 120


def sanitise(text: object, limit: int = SANITISED_LENGTH) -> str:
    """``text`` as one printable ASCII line of at most about ``limit`` characters."""
    raw = str(text)
    cut = raw[:limit]
    clean = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in cut)
    if len(raw) > limit:
        clean += f"...(+{len(raw) - limit})"
    return clean


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds; the rest are counted and summed up."""

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = 10,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._window_end = 0.0
        self._written = 0
        self._suppressed = 0

    def allow(self) -> bool:
        """Whether one more line may be written now (counts it when not)."""
        now = self.clock()
        if now >= self._window_end:
            if self._suppressed:
                self.logger.warning(
                    "%d similar lines left out in the last %gs", self._suppressed, self.interval
                )
            self._window_end = now + self.interval
            self._written = self._suppressed = 0
        if self._written < self.burst:
            self._written += 1
            return True
        self._suppressed += 1
        return False

    def warning(self, message: str, *args: object) -> None:
        if self.allow():
            self.logger.warning(message, *args)


class LogThrottle:
    """Decides which occurrences of each kind get a log line."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        # kind -> (when the last line was written, occurrences since then without a line)
        self._state: dict[str, tuple[float, int]] = {}

    def admit(self, kind: str, now: float) -> int | None:
        """None to stay quiet; else write a line now, which also stands for the returned
        number of earlier occurrences that were not logged."""
        state = self._state.get(kind)
        if state is not None and now - state[0] < self.interval:
            self._state[kind] = (state[0], state[1] + 1)
            return None
        self._state[kind] = (now, 0)
        return 0 if state is None else state[1]
