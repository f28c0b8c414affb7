"""The README's quick start: `hack/demo` shows a newcomer AP destinations and answered calls."""

from __future__ import annotations

import subprocess

import pytest

from sipphelpers import REPO_ROOT

pytestmark = pytest.mark.sipp


def test_the_demo_answers_every_call_and_shows_both_destinations_ap() -> None:
    done = subprocess.run(
        [str(REPO_ROOT / "hack" / "demo"), "6"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 calls placed through the proxy: 6 answered, 0 failed" in done.stdout
    listed = [line for line in done.stdout.splitlines() if line.startswith("1 ")]
    assert {line.split()[1] for line in listed} == {"sip:127.0.0.2:5060", "sip:127.0.0.3:5060"}
    assert all(line.split()[2] == "AP" for line in listed)
    answered = [line for line in done.stdout.splitlines() if "calls_answered_total" in line]
    # Round-robin over two gateways: three calls each, as the proxy's own metrics count them.
    assert sorted(float(line.split()[-1]) for line in answered) == [3.0, 3.0]
