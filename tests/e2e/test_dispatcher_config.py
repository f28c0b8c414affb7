"""A broken configuration never takes the proxy down: with calls running through a proxy
started from a YAML config, ``sipdispatch-ctl reload`` of a broken file fails with a message
naming the file, line and field, and the watched file broken by an edit is refused the same
way; the previous table keeps serving every call. A good edit is then applied without restart,
keeping the learned health of the destinations whose key did not change."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy

from sipphelpers import SippGateway, SippLab, dispatch_problems, routing_report

pytestmark = pytest.mark.sipp

CONFIG = """\
sets:
  - id: 1
    algorithm: round-robin
    destinations:
      - uri: sip:{gw1}
      - uri: sip:{gw2}
        weight: {weight}
probing:
  interval: 0.5
  timeout: 0.4
  failureThreshold: 2
  successThreshold: 2
"""
WEIGHT_LINE = 7  # the line of "weight:" above


def write(path: Path, text: str) -> None:
    """Replace the file at once, as a ConfigMap update or an editor's save does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def config(gw1: SippGateway, gw2: SippGateway, weight: object) -> str:
    return CONFIG.format(gw1=gw1.hostport, gw2=gw2.hostport, weight=weight)


def wait_for_log(proxy: SipdispatchProxy, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proxy.log().splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line with {text!r}:\n{proxy.log()[-2000:]}")


def test_a_broken_config_is_refused_with_its_line_and_field_and_calls_go_on(
    sipp_lab: SippLab, tmp_path: Path
) -> None:
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [gw1, gw2], config_text=config(gw1, gw2, 1)
    ).start()
    path = proxy.table
    try:
        calls = 20 * 9
        caller = sipp_lab.caller(proxy.hostport, rate=20, calls=calls, call_ms=300).start()
        time.sleep(1.5)
        before = proxy.destination(f"sip:{gw2.hostport}")
        assert (before["state"], before["weight"]) == ("AP", 1)

        # 1. sipdispatch-ctl reload of a file with a bad value.
        write(path, config(gw1, gw2, -3))
        reload = proxy.ctl("reload")
        assert reload.returncode == 1
        message = reload.stderr
        print(f"\nctl reload of a broken file: {message.strip()}")
        assert f"{path}:{WEIGHT_LINE}: sets[0].destinations[1].weight" in message
        assert "greater than or equal to 0" in message
        assert "the previous table is still served" in message
        assert proxy.destination(f"sip:{gw2.hostport}")["weight"] == 1

        # 2. The watched file broken by an edit: refused, logged with its line.
        write(path, config(gw1, gw2, 1).replace("  interval: 0.5", "  interval: [0.5"))
        # The watcher may also have logged the weight of step 1 (the same file): wait for
        # the line about this edit.
        line = wait_for_log(proxy, "invalid YAML")
        print(f"watched file broken: {line}")
        assert "table change not applied" in line
        assert f"{path}:10: invalid YAML" in line  # where the parser found the problem
        assert proxy.ctl("ping").returncode == 0
        samples = proxy.destination(f"sip:{gw2.hostport}")["latency"]["samples"]

        # 3. A good edit is applied without restart; learned health and latency carried.
        write(path, config(gw1, gw2, 5))
        deadline = time.monotonic() + 5
        while proxy.destination(f"sip:{gw2.hostport}")["weight"] != 5:
            assert time.monotonic() < deadline, proxy.log()[-2000:]
            time.sleep(0.1)
        after = proxy.destination(f"sip:{gw2.hostport}")
        assert after["state"] == "AP"
        assert after["latency"]["samples"] >= samples  # not reset by the reload
        assert after["reason"] == before["reason"]
        assert after["changedAt"] == before["changedAt"]  # the same instant in every answer

        result = caller.wait(timeout=60)
        report = routing_report([gw1, gw2], caller.call_ids())
        problems = dispatch_problems(result, report, calls=calls, even_split=False)
        assert not problems, "\n".join(problems)
        assert proxy.process.running()
    finally:
        proxy.stop()
