"""Repeated Events coalesced into series (pure)."""

from __future__ import annotations

import pytest

from sipdispatch.operator.eventseries import EventSeries, Occurrence, counted

DOWN = ("voice", "asterisk", "Warning", "DestinationDown", "sip:10.1.0.5:5080")
UP = ("voice", "asterisk", "Normal", "DestinationUp", "sip:10.1.0.5:5080")
OTHER = ("voice", "asterisk", "Warning", "DestinationDown", "sip:10.1.0.6:5080")


def test_repeats_within_the_window_count_into_one_event() -> None:
    series = EventSeries(window=60.0)
    assert series.record(DOWN, 100.0) == Occurrence(None, 1, 100.0)
    series.created(DOWN, "asterisk.1")
    assert series.record(UP, 101.0) == Occurrence(None, 1, 101.0)  # another reason
    assert series.record(OTHER, 101.0) == Occurrence(None, 1, 101.0)  # another destination
    assert series.record(DOWN, 130.0) == Occurrence("asterisk.1", 2, 100.0)
    assert series.record(DOWN, 159.0) == Occurrence("asterisk.1", 3, 100.0)
    assert series.record(DOWN, 160.0) == Occurrence(None, 1, 160.0)  # the window is over


def test_old_series_are_forgotten_and_a_lost_event_starts_anew() -> None:
    series = EventSeries(window=60.0)
    for key in (DOWN, UP, OTHER):
        series.record(key, 0.0)
        series.created(key, "x")
    assert len(series) == 3
    series.record(DOWN, 61.0)
    assert len(series) == 1
    series.lost(DOWN)
    assert series.record(DOWN, 62.0) == Occurrence(None, 1, 62.0)


def test_the_message_says_how_often_and_since_when() -> None:
    assert counted("down", Occurrence(None, 1, 0.0), "T") == "down"
    assert counted("down", Occurrence("e", 4, 0.0), "2030-01-01T00:00:00Z") == (
        "down (4 times since 2030-01-01T00:00:00Z)"
    )


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        EventSeries(window=0)
