"""Rate-limited log lines: one line per kind and interval, saying how many it stood for.

Refusals and missing hash keys come with the traffic: a misconfigured caller sending thousands
of calls a second must not turn into thousands of log lines (the metrics count every one).
"""

from __future__ import annotations

__all__ = ["LogThrottle"]


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
