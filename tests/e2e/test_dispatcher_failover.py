"""A gateway dies under load and comes back, with sipp callers and gateways on loopback.

caller (50 calls/s) -> sipdispatch (round-robin, probing every 0.5 s) -> gw1 (127.0.0.2), gw2
(127.0.0.3). gw1 is killed with SIGKILL: every call placed after that must still succeed (its
INVITE fails over to gw2); calls already established on gw1 lose their BYE and may fail, they
are counted and printed. ``sipdispatch-ctl list`` shows gw1 trying (TP: probing mode ``all``
probes every destination, as Kamailio's ``ds_probing_mode=1`` does; TX in modes that do not
probe active destinations) and then IP once the failure threshold is reached. gw1 restarted on
the same address shows AX (coming up, not yet given calls) and then AP, and gets calls again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy, StateWatcher

from sipphelpers import SippCaller, SippLab, dispatch_problems, routing_report

pytestmark = pytest.mark.sipp

RATE = 50
RECV_TIMEOUT = 4.0  # the caller's patience for any reply
FAILURES, SUCCESSES = 3, 3
PROBING = [
    "--probe-interval",
    "0.5",
    "--probe-timeout",
    "0.4",
    "--failure-threshold",
    str(FAILURES),
    "--success-threshold",
    str(SUCCESSES),
    # A call that gets no answer at all moves on after 2 s (Kamailio's fr_timer).
    "--answer-timeout",
    "2",
]


def invite_times(caller: SippCaller) -> dict[str, float]:
    """Call-ID -> when the caller sent its first INVITE (Unix time)."""
    out: dict[str, float] = {}
    for m in caller.messages():
        if m.direction == "S" and m.method == "INVITE":
            out.setdefault(m.call_id, m.time)
    return out


def test_a_killed_gateway_loses_no_new_call_and_comes_back_ax_then_ap(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    proxy = SipdispatchProxy(tmp_path / "proxy", [gw1, gw2], extra_args=PROBING).start()
    proxies.append(proxy)
    calls = RATE * 13
    caller = sipp_lab.caller(
        proxy.hostport,
        rate=RATE,
        calls=calls,
        call_ms=500,
        recv_timeout_ms=int(RECV_TIMEOUT * 1000),
    )
    with StateWatcher(proxy, gw1.uri) as watch:
        watch.wait_for("AP", since=0.0, timeout=5)
        caller.start()
        time.sleep(2.0)

        killed_at = time.time()
        gw1.kill()
        trying = watch.wait_for("TP", since=killed_at, timeout=5)
        inactive = watch.wait_for("IP", since=killed_at, timeout=8)
        # Stay dead until the caller gave up on the BYEs of the calls gw1 took down with it (a
        # sipp gateway answers any BYE, so an earlier restart would rescue them).
        time.sleep(max(0.0, killed_at + RECV_TIMEOUT + 0.5 - time.time()))

        restarted_at = time.time()
        gw1_again = sipp_lab.gateway("gw1-again", ip=gw1.ip, port=gw1.port)
        coming_up = watch.wait_for("AX", since=restarted_at, timeout=8)
        active = watch.wait_for("AP", since=restarted_at, timeout=8)
        result = caller.wait(timeout=60)

    # ctl showed trying, then inactive after the threshold; then coming up, then active.
    after_kill = watch.states(killed_at)
    if after_kill[0] == "AP":  # a look before the first probe went unanswered
        after_kill = after_kill[1:]
    assert after_kill[:2] == ["TP", "IP"], watch.states(killed_at)
    assert trying.time <= inactive.time
    after_restart = watch.states(restarted_at)
    if after_restart[0] == "IP":  # a look before the first probe was answered
        after_restart = after_restart[1:]
    assert after_restart[:2] == ["AX", "AP"], watch.states(restarted_at)
    assert coming_up.time <= active.time
    assert f"{FAILURES} consecutive failures" in inactive.reason
    assert coming_up.reason.startswith("coming up")

    sent = invite_times(caller)
    completed = caller.completed_call_ids()
    new_calls = {cid for cid, at in sent.items() if at >= killed_at}
    old_calls = set(sent) - new_calls
    failed_new = sorted(new_calls - completed)
    failed_old = sorted(old_calls - completed)
    report = routing_report([gw1, gw2, gw1_again], caller.call_ids())
    detection = (inactive.changed_at or inactive.time) - killed_at
    recovery = (active.changed_at or active.time) - restarted_at
    print(
        f"\nkill under {RATE} calls/s: {len(sent)} calls, {len(new_calls)} placed after the kill, "
        f"{len(failed_new)} of them failed; {len(failed_old)} calls in progress at the kill "
        f"failed; detection (kill -> IP) {detection:.2f} s, recovery (restart -> AP) "
        f"{recovery:.2f} s; answered per gateway {report.per_gateway}; states after the kill "
        f"{watch.states(killed_at)}\n{result.summary()}"
    )
    assert len(sent) == calls
    assert not failed_new, f"new calls failed after the kill: {failed_new[:5]}"
    # Only calls on gw1 at the moment it died may fail: a few seconds' worth at most.
    assert len(failed_old) <= RATE * 2, failed_old[:5]
    assert 0 < detection < 4.0
    assert 0 < recovery < 4.0
    # Calls went to gw1 again once it was back.
    assert report.per_gateway["gw1-again"] > 0
    assert not report.answered_twice


def test_a_gateway_answering_503_loses_no_call(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    proxy_build: list[str] | None,
) -> None:
    """Every INVITE the 503 gateway refuses fails over to the other one; none fails. With 5xx
    replies made to count (``--passive-codes``; by default a reply proves the box alive),
    passive marking takes the refusing gateway out after the threshold, and its probes (it
    answers OPTIONS) bring it back for another try, so it keeps being tried now and then."""
    bad = sipp_lab.gateway("bad", scenario="uas_503")
    good = sipp_lab.gateway("good")
    args = [*PROBING, "--passive-codes", "5xx"]
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [bad, good], extra_args=args, command=proxy_build
    ).start()
    proxies.append(proxy)
    calls = RATE * 6
    caller = sipp_lab.caller(proxy.hostport, rate=RATE, calls=calls, call_ms=300)

    result = caller.run()

    report = routing_report([bad, good], caller.call_ids())
    refused = report.rejected["bad"].get(503, 0)
    failovers = proxy.metric(f'sipdispatch_failovers_total{{set="1",uri="{bad.uri}"}}')
    state = proxy.destination(bad.uri)
    print(
        f"\n503 gateway: {result.successful} of {calls} calls succeeded, {refused} INVITEs "
        f"refused by it and failed over, {failovers:g} failovers counted; it is now "
        f"{state['state']} ({state['reason']})"
    )
    problems = dispatch_problems(result, report, calls=calls, even_split=False)
    assert not problems, "\n".join(problems)
    assert report.per_gateway == {"bad": 0, "good": calls}
    assert refused >= FAILURES  # it was tried, and marked after the threshold
    assert failovers == refused


def test_failed_calls_alone_mark_a_dead_gateway_tx_then_ip(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    """Probing mode ``inactive`` (Kamailio's 2) probes only inactive destinations: a gateway
    that dies is noticed by the calls that time out on it (passive marking), shown TX (trying,
    not probed), then IP once the threshold is reached, when probing starts."""
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    args = [*PROBING, "--probe-mode", "inactive", "--answer-timeout", "1"]
    proxy = SipdispatchProxy(tmp_path / "proxy", [gw1, gw2], extra_args=args).start()
    proxies.append(proxy)
    assert proxy.destination(gw1.uri)["state"] == "AX"  # active, not probed in this mode
    calls = 20 * 6
    caller = sipp_lab.caller(
        proxy.hostport, rate=20, calls=calls, call_ms=200, recv_timeout_ms=3000
    )
    caller.start()
    time.sleep(1.5)
    killed_at = time.time()
    gw1.kill()
    result = caller.wait(timeout=60)

    final = proxy.destination(gw1.uri)
    changes = [line for line in proxy.log().splitlines() if f"destination {gw1.uri}:" in line]
    print("\n" + "\n".join(changes))
    assert final["state"] == "IP"
    assert f"{FAILURES} consecutive failures (call timed out)" in final["reason"]
    assert "AX -> TX (traffic: call timed out)" in changes[0]
    assert "TX -> IP (traffic:" in changes[1]
    assert changes[1].endswith("DOWN")
    sent = invite_times(caller)
    failed_new = {cid for cid, at in sent.items() if at >= killed_at} - caller.completed_call_ids()
    assert not failed_new
    assert result.created == calls
