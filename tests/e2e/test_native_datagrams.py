"""The compiled build's UDP by the batch (``_datagrams.c``) over real loopback sockets."""

from __future__ import annotations

from pathlib import Path

from sipdispatchproc import run_compiled

HERE = Path(__file__).resolve().parent


def test_datagrams_by_the_batch_arrive_and_leave_whole_in_order(
    compiled_proxy_command: list[str],
) -> None:
    out = run_compiled(compiled_proxy_command, HERE / "datagrams_check.py")
    assert "all datagrams agree" in out
    assert out.count("served by the batch") == 2  # IPv4 and IPv6
