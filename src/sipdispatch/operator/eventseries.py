"""Events coalesced into series, so that a flapping destination does not flood. Pure.

Like Kubernetes' own event series (client-go's event correlator), repeats of one event (the
same DispatcherSet, type, reason and destination) within ``window`` seconds of the first are
one Event object: its ``count`` and ``lastTimestamp`` grow and its message says how often
and since when. A gateway that goes down and up every few seconds thus keeps two Events per
destination (DestinationDown, DestinationUp) per window instead of two per flap; the next
occurrence after the window starts a new Event.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WINDOW", "EventSeries", "Occurrence", "SeriesKey", "counted"]

#: how long one Event object collects repeats (client-go's correlator also uses 10 minutes)
WINDOW = 600.0

#: namespace, DispatcherSet name, type (Normal, Warning), reason, subject (a destination URI)
SeriesKey = tuple[str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One more occurrence: the Event to create (``name`` None) or to update."""

    name: str | None
    count: int
    first: float


@dataclass(slots=True)
class _Series:
    first: float
    count: int = 1
    name: str | None = None  # the Event object, once created


class EventSeries:
    """The open series, by key; series older than the window are forgotten."""

    def __init__(self, window: float = WINDOW) -> None:
        if window <= 0:
            raise ValueError(f"the window must be positive, got {window}")
        self.window = window
        self._series: dict[SeriesKey, _Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def record(self, key: SeriesKey, now: float) -> Occurrence:
        """Count one occurrence of ``key`` at ``now``."""
        self._prune(now)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(first=now)
        else:
            series.count += 1
        return Occurrence(series.name, series.count, series.first)

    def created(self, key: SeriesKey, name: str) -> None:
        """The Event of ``key``'s series was created as ``name``: later repeats update it."""
        series = self._series.get(key)
        if series is not None:
            series.name = name

    def lost(self, key: SeriesKey) -> None:
        """The Event of ``key`` is gone (expired, deleted): the next occurrence starts anew."""
        self._series.pop(key, None)

    def _prune(self, now: float) -> None:
        expired = [k for k, s in self._series.items() if now - s.first >= self.window]
        for key in expired:
            del self._series[key]


def counted(message: str, occurrence: Occurrence, since: str) -> str:
    """The message of an Event in a series: how often it happened, and since when."""
    if occurrence.count <= 1:
        return message
    return f"{message} ({occurrence.count} times since {since})"
