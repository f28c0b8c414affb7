"""The sipp harness against itself, no proxy in between: a caller straight to gateways.

These prove that the scenarios and the harness's reading of results are right before they
are used to judge a proxy: calls complete, the gateway's log shows who answered and who got
the ACK and BYE, OPTIONS are answered while calls run, rejecting gateways reject, and the
routing check catches a BYE that reaches the wrong gateway.  They need sipp (installed by
hack/bootstrap) and never skip.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from sipphelpers import (
    SippLab,
    Transport,
    dispatch_problems,
    routing_report,
    sip_options_ping,
)

pytestmark = pytest.mark.sipp


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_caller_to_one_gateway(sipp_lab: SippLab, transport: Transport) -> None:
    gw = sipp_lab.gateway("gw1", transport=transport)
    caller = sipp_lab.caller(gw.hostport, transport=transport, rate=50, calls=150, call_ms=200)

    result = caller.run()

    report = routing_report([gw], caller.call_ids())
    problems = dispatch_problems(result, report, calls=150)
    assert not problems, "\n".join(problems)
    assert report.per_gateway == {"gw1": 150}
    assert caller.completed_call_ids() == caller.call_ids()
    assert len(caller.call_ids()) == 150
    # the gateway saw each call exactly as the scenario says, in order
    call = gw.calls()[sorted(caller.call_ids())[0]]
    assert call.requests == ["INVITE", "ACK", "BYE"]
    assert [s for s, _ in call.responses] == [100, 180, 200, 200]
    assert result.retransmissions == 0


def test_gateway_answers_options_while_calls_are_up(sipp_lab: SippLab) -> None:
    """Health probes have their own Call-IDs and arrive at any time: every one gets a 200
    while calls are being set up, held and torn down, and no call suffers for it."""
    gw = sipp_lab.gateway("gw1")
    caller = sipp_lab.caller(gw.hostport, rate=50, calls=150, call_ms=1000).start()
    codes: list[int | None] = []

    def probe() -> None:
        while caller.process.running() and len(codes) < 200:
            codes.append(sip_options_ping(gw.ip, gw.port, "udp", timeout=1.0))
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    result = caller.wait()
    prober.join()

    assert len(codes) >= 20, f"only {len(codes)} probes sent during the calls"
    assert set(codes) == {200}, f"probe answers: {codes}"
    report = routing_report([gw], caller.call_ids())
    problems = dispatch_problems(result, report, calls=150)
    assert not problems, "\n".join(problems)
    assert gw.options_answered(include_harness=True) >= len(codes)


@pytest.mark.parametrize(("scenario", "status"), [("uas_503", 503), ("uas_486", 486)])
def test_rejecting_gateways(sipp_lab: SippLab, scenario: str, status: int) -> None:
    gw = sipp_lab.gateway("gw1", scenario=scenario)
    caller = sipp_lab.caller(gw.hostport, rate=20, calls=10, call_ms=100)

    result = caller.run()

    assert result.returncode == 1, result.summary()
    assert (result.successful, result.failed) == (0, 10), result.summary()
    assert result.failures == {"FailedUnexpectedMessage": 10}, result.summary()
    report = routing_report([gw], caller.call_ids())
    assert report.rejected == {"gw1": {status: 10}}
    assert report.answered_by == {}
    assert len(report.not_answered) == 10
    # the caller's ACK for the rejection reached the gateway (hop-by-hop ACK)
    assert all(gw.calls()[cid].got_ack for cid in caller.call_ids())
    # still answering probes
    assert sip_options_ping(gw.ip, gw.port, "udp") == 200


def test_routing_check_catches_a_bye_at_the_wrong_gateway(sipp_lab: SippLab) -> None:
    """A real misrouted BYE: calls go to gw1, then one stray BYE for one of them is sent to
    gw2.  The check must name that call, and gw2 must log it although it has no such call."""
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    caller = sipp_lab.caller(gw1.hostport, rate=20, calls=5, call_ms=100)
    result = caller.run()
    assert result.successful == 5, result.summary()
    victim = sorted(caller.call_ids())[0]
    assert routing_report([gw1, gw2], caller.call_ids()).problems() == []

    _send_bye(gw2.ip, gw2.port, victim)

    report = routing_report([gw1, gw2], caller.call_ids())
    assert report.bye_elsewhere == [(victim, "gw1", "gw2")]
    assert any("did not answer" in p for p in report.problems())


def _send_bye(ip: str, port: int, call_id: str) -> None:
    msg = (
        f"BYE sip:{ip}:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKstraybye\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:sipp@127.0.0.1>;tag=stray\r\n"
        f"To: <sip:service@{ip}>;tag=stray2\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 2 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(msg, (ip, port))
    time.sleep(0.3)  # sipp logs it on receipt (flushed line by line)
