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

import pytest

from sipphelpers import SippLab, Transport, dispatch_problems, routing_report

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
    figures = {
        "transport": transport,
        "calls": result.successful,
        "elapsed_s": round(result.elapsed_s, 2),
        "answer_ms_mean": result.answer_ms_mean,
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
