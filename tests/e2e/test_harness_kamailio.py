"""The sipp harness through Kamailio's dispatcher: the comparison peer, and the shape of the
tests that will be pointed at sipdispatch.

caller (127.0.0.1) -> Kamailio (127.0.0.1, round robin, record-route, t_relay, OPTIONS probes
every second) -> gateways on 127.0.0.2 and 127.0.0.3.  100 calls/s for 10 s must all
complete, split evenly, with the ACK and BYE of every call at the gateway that answered it,
while both gateways answer Kamailio's probes.

Skipped, saying so, only when the kamailio binary is missing: Kamailio is the comparison
peer, not a dependency of sipdispatch.
"""

from __future__ import annotations

import time

import pytest

from sipphelpers import SippLab, Transport, dispatch_problems, percentile, routing_report

pytestmark = pytest.mark.sipp

RATE = 100  # calls/s
SECONDS = 10
CALLS = RATE * SECONDS


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kamailio_dispatches_evenly_and_bye_follows_the_dialog(
    sipp_lab: SippLab,
    kamailio_bin: str,
    transport: Transport,
    record_property: pytest.RecordProperty,
) -> None:
    gw1 = sipp_lab.gateway("gw1", transport=transport)
    gw2 = sipp_lab.gateway("gw2", transport=transport)
    kamailio = sipp_lab.kamailio([gw1, gw2], ping_interval_s=1)
    caller = sipp_lab.caller(
        kamailio.hostport, transport=transport, rate=RATE, calls=CALLS, call_ms=1000
    )
    gw_cpu0 = gw1.process.cpu_seconds() + gw2.process.cpu_seconds()
    kam_cpu0 = kamailio.cpu_seconds()

    result = caller.run()

    kam_cpu = kamailio.cpu_seconds() - kam_cpu0
    gw_cpu = gw1.process.cpu_seconds() + gw2.process.cpu_seconds() - gw_cpu0
    report = routing_report([gw1, gw2], caller.call_ids())
    answer = caller.answer_delays().values()
    figures = {
        "transport": transport,
        "calls": result.successful,
        "elapsed_s": round(result.elapsed_s, 2),
        "answer_ms_p50": round(percentile(answer, 50) * 1000, 2),
        "answer_ms_p99": round(percentile(answer, 99) * 1000, 2),
        "retransmissions": result.retransmissions,
        "kamailio_cpu_s": round(kam_cpu, 3),
        "caller_cpu_s": round(result.cpu_s or 0.0, 3),
        "gateways_cpu_s": round(gw_cpu, 3),
        "split": report.per_gateway,
        "probes_answered": {gw.name: gw.options_answered() for gw in (gw1, gw2)},
    }
    for key, value in figures.items():
        record_property(key, value)
    print(f"kamailio {transport}: {figures}")

    problems = dispatch_problems(result, report, calls=CALLS)
    assert not problems, "\n".join(problems)
    assert caller.completed_call_ids() == caller.call_ids()
    # Kamailio probed both gateways during the run (1 s interval), and they answered
    for gw in (gw1, gw2):
        assert gw.options_answered() >= SECONDS // 2, f"{gw.name}: {figures}"


def test_kamailio_fails_over_from_a_503_gateway(sipp_lab: SippLab, kamailio_bin: str) -> None:
    """A gateway that rejects with 503: Kamailio tries the next one, so no call fails and
    every call is answered by the good gateway; the 503s are seen at the bad one."""
    bad = sipp_lab.gateway("bad", scenario="uas_503")
    good = sipp_lab.gateway("good")
    kamailio = sipp_lab.kamailio([bad, good])
    caller = sipp_lab.caller(kamailio.hostport, rate=50, calls=100, call_ms=200)

    result = caller.run()

    report = routing_report([bad, good], caller.call_ids())
    problems = dispatch_problems(result, report, calls=100, even_split=False)
    assert not problems, "\n".join(problems)
    assert report.per_gateway == {"bad": 0, "good": 100}
    # round robin sends about half the first attempts to the bad gateway
    assert 30 <= report.rejected["bad"].get(503, 0) <= 70, report.rejected


def test_kamailio_gateway_killed_under_load(
    sipp_lab: SippLab, kamailio_bin: str, record_property: pytest.RecordProperty
) -> None:
    """SIGKILL one of two gateways in the middle of a run.  This checks the harness, not
    Kamailio: the killed gateway and its log stop at the kill, and the calls the caller lost
    are exactly those the gateway logs show were cut off there (answered but no BYE answered,
    or INVITE received but never answered).  The number is Kamailio's failover figure."""
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    kamailio = sipp_lab.kamailio([gw1, gw2], ping_interval_s=1, fr_timer_ms=2000)
    caller = sipp_lab.caller(
        kamailio.hostport, rate=50, calls=250, call_ms=500, recv_timeout_ms=5000
    ).start()
    time.sleep(2.0)
    killed_at = time.time()
    gw2.kill()

    result = caller.wait()

    assert not gw2.process.running()
    assert gw2.process.group_pids() == []
    last = max(m.time for m in gw2.messages())
    assert last <= killed_at + 0.5, "gw2 logged messages after it was killed"
    report = routing_report([gw1, gw2], caller.call_ids())
    assert report.answered_twice == []
    assert report.bye_elsewhere == []
    cut_off = {
        cid
        for cid, call in gw2.calls().items()
        if cid in caller.call_ids() and call.got_invite and not call.bye_answered
    }
    lost = caller.call_ids() - caller.completed_call_ids()
    answer = caller.answer_delays().values()
    figures = {
        "calls": result.created,
        "failed": result.failed,
        "cut_off_at_gw2": len(cut_off),
        "answered_by": report.per_gateway,
        # INVITEs sent to gw2 after its death wait for the branch timeout, then fail over
        "answered_after_1s": sum(d > 1.0 for d in answer),
        "answer_ms_max": round(max(answer) * 1000, 1),
    }
    for key, value in figures.items():
        record_property(key, value)
    print(f"kamailio, gateway killed: {figures}")
    assert lost == cut_off, result.summary()
    assert result.failed == len(lost), result.summary()
    assert result.created == 250, result.summary()
