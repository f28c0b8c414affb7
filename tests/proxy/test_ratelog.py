"""What the network sends reaches the log bounded: one printable line, a few per interval."""

from __future__ import annotations

import logging

import pytest

from sipdispatch.proxy.ratelog import RateLimitedLog, sanitise


def test_sanitise_keeps_one_printable_line_of_bounded_length() -> None:
    hostile = "call\r\nFAKE 2026 ERROR forged line\x1b[31m\x00" + "x" * 500
    clean = sanitise(hostile, limit=60)
    assert clean.isprintable()
    assert clean.isascii()
    assert "\r" not in clean
    assert "\n" not in clean
    assert clean.startswith("call\\x0d\\x0aFAKE")
    assert clean.endswith(f"...(+{len(hostile) - 60})")
    assert sanitise("abc@host") == "abc@host"


def test_a_burst_writes_a_few_lines_then_one_saying_how_many_were_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimitedLog(
        logging.getLogger("ratelog-test"), burst=3, interval=10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="ratelog-test"):
        for i in range(1000):
            limited.warning("bad message %d", i)
        now[0] = 10.0
        limited.warning("after the interval")
    assert caplog.messages == [
        "bad message 0",
        "bad message 1",
        "bad message 2",
        "997 similar lines left out in the last 10s",
        "after the interval",
    ]
