"""The compiled build's UDP by the batch (``_datagrams.c``) over real loopback sockets."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_datagrams_by_the_batch_arrive_and_leave_whole_in_order(
    compiled_proxy_command: list[str],
) -> None:
    python = Path(compiled_proxy_command[0]).parent / "python"
    checked = subprocess.run(
        [str(python), str(HERE / "datagrams_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert "all datagrams agree" in checked.stdout
    assert checked.stdout.count("served by the batch") == 2  # IPv4 and IPv6
