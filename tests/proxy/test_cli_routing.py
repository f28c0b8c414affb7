"""``sipdispatch-proxy`` and routing: a bad route stops it at start naming file, line and field;
the routing flags become settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipdispatch.proxy import cli
from sipdispatch.proxy.settings import DEFAULTS

BAD = """\
sets:
  - id: 1
    destinations: [{uri: "sip:127.0.0.2:5060"}]
routes:
  - name: out
    set: 3
"""


def test_a_route_to_an_unknown_set_stops_the_proxy_at_start(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(BAD)
    command = [sys.executable, "-m", "sipdispatch.proxy", "--config", str(config)]
    done = subprocess.run(
        [*command, "--listen", "udp:127.0.0.1:0", "--control", "off"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"{config}:6: routes[0].set: set 3 is not defined in sets" in done.stderr


def test_routing_flags() -> None:
    args = cli.build_parser().parse_args(["--dispatcher-list", "x"])
    assert args.challenge_affinity_ttl == DEFAULTS.challenge_affinity_ttl == 32.0
    assert args.challenge_affinity_size == DEFAULTS.challenge_affinity_size == 10_000
    assert args.source_header is None
    args = cli.build_parser().parse_args(
        ["--dispatcher-list", "x", "--source-header", "X-Src", "--challenge-affinity-size", "0"]
    )
    assert (args.source_header, args.challenge_affinity_size) == ("X-Src", 0)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--dispatcher-list", "x", "--source-header", "X Src"])
