"""Admin states through ``sipdispatch-ctl``, as an operator uses them, under 50 calls/s.

``set-state dx`` takes a healthy gateway out: it gets no new call although it still answers
OPTIONS, and probing never puts it back (a disabled destination is not even probed);
``set-state ap`` puts it back into rotation.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy, StateWatcher

from sipphelpers import (
    HARNESS_PING_PREFIX,
    SippGateway,
    SippLab,
    dispatch_problems,
    routing_report,
    sip_options_ping,
)

pytestmark = pytest.mark.sipp

PROBING = [
    "--probe-interval",
    "0.5",
    "--probe-timeout",
    "0.4",
    "--failure-threshold",
    "2",
    "--success-threshold",
    "2",
]


def received(gw: SippGateway, method: str, since: float, until: float) -> int:
    """Requests of ``method`` from the proxy the gateway received in [since, until) (Unix
    time); the harness's own OPTIONS are not counted."""
    return sum(
        1
        for m in gw.messages()
        if m.direction == "R"
        and m.method == method
        and since <= m.time < until
        and not m.call_id.startswith(HARNESS_PING_PREFIX)
    )


def test_set_state_dx_keeps_calls_off_a_gateway_that_still_answers_options(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    proxy = SipdispatchProxy(tmp_path / "proxy", [gw1, gw2], extra_args=PROBING).start()
    proxies.append(proxy)
    calls = 50 * 7
    caller = sipp_lab.caller(proxy.hostport, rate=50, calls=calls, call_ms=300)
    with StateWatcher(proxy, gw1.uri) as watch:
        watch.wait_for("AP", since=0.0, timeout=5)
        caller.start()
        time.sleep(1.5)

        done = proxy.ctl("set-state", "dx", "1", gw1.uri)
        disabled_at = time.time()
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"set 1 {gw1.uri}: DX"
        time.sleep(3.0)  # six probe intervals

        # The gateway is perfectly healthy, and still DX.
        assert sip_options_ping(gw1.ip, gw1.port) == 200
        listing = proxy.ctl("list")
        assert listing.returncode == 0, listing.stderr
        row = next(line for line in listing.stdout.splitlines() if gw1.uri in line)
        assert row.split()[2] == "DX", listing.stdout
        enabling_at = time.time()  # DX holds at least until set-state ap is run
        enabled = proxy.ctl("set-state", "ap", "1", gw1.uri)
        enabled_at = time.time()
        assert enabled.returncode == 0, enabled.stderr
        result = caller.wait(timeout=60)
    assert watch.states(disabled_at + 0.05)[:2] == ["DX", "AP"], watch.states(disabled_at)

    margin = 0.05  # an INVITE already on its way when set-state returned
    during = received(gw1, "INVITE", disabled_at + margin, enabling_at)
    before = received(gw1, "INVITE", 0.0, disabled_at)
    after = received(gw1, "INVITE", enabled_at + margin, time.time())
    probes_during = received(gw1, "OPTIONS", disabled_at + 0.6, enabling_at)
    report = routing_report([gw1, gw2], caller.call_ids())
    print(
        f"\nset-state dx: gw1 got {before} INVITEs before, {during} while DX, {after} after "
        f"set-state ap; {probes_during} probes while DX; {report.per_gateway}"
    )
    assert before > 0
    assert during == 0
    assert after > 0
    assert probes_during == 0  # a disabled destination is never probed
    problems = dispatch_problems(result, report, calls=calls, even_split=False)
    assert not problems, "\n".join(problems)


def test_set_state_refuses_unknown_states_and_destinations_clearly(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gw1 = sipp_lab.gateway("gw1")
    proxy = SipdispatchProxy(tmp_path / "proxy", [gw1], extra_args=PROBING).start()
    proxies.append(proxy)
    bad_state = proxy.ctl("set-state", "up", "1", gw1.uri)
    assert bad_state.returncode == 1
    assert "'up' is not one of" in bad_state.stderr
    unknown = proxy.ctl("set-state", "dx", "1", "sip:127.0.0.99:5060")
    assert unknown.returncode == 1
    assert "no destination sip:127.0.0.99:5060 in set 1" in unknown.stderr
    assert proxy.destination(gw1.uri)["state"] == "AP"
