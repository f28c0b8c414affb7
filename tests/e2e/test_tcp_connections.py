"""TCP by the RFC, with real sipp callers and gateways on loopback.

* A gateway that resets its connection on every INVITE (a scripted stand-in: a real one
  cannot be made to) is failed over to a real sipp gateway at once, under a bounded load,
  not after the answer timeout; no call fails.
* RFC 3261 18.2.2: a caller that sends its INVITE and closes the connection gets the
  responses at its Via sent-by, and the call goes on to the gateway's BYE.
* A sipp caller whose Contact nobody listens on (as behind NAT) gets the gateway's BYE over
  its own connection, and answers it.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
from resetgateway import ResettingGateway
from sipdispatchproc import SipdispatchProxy
from streampeer import Stream, header, response_to

from sipphelpers import SippLab, free_port, percentile

pytestmark = pytest.mark.sipp

RATE = 20  # calls/s
CALLS = 100  # five seconds of calls
ANSWER_TIMEOUT = 5.0  # the proxy's default: what a reset cost before


def test_a_gateway_reset_fails_over_at_once_under_load(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    ip = sipp_lab.next_gateway_ip()
    resetting = ResettingGateway(ip, free_port(ip)).start()
    try:
        answering = sipp_lab.gateway("answering", transport="tcp")
        # Priority: every call tries the resetting gateway first. Passive marking would take it
        # out after a few resets; the threshold keeps it in, so that every call meets a RST.
        table = f"1 {resetting.uri} 0 10\n1 {answering.uri} 0 1\n"
        proxy = SipdispatchProxy(
            tmp_path / "proxy",
            [answering],
            transport="tcp",
            table_text=table,
            extra_args=["--algorithm", "8", "--failure-threshold", "1000"],
        ).start()
        proxies.append(proxy)
        caller = sipp_lab.caller(
            proxy.hostport, transport="tcp", rate=RATE, calls=CALLS, call_ms=200
        )
        result = caller.run()
    finally:
        resetting.stop()

    arrived: dict[str, float] = {}
    for message in answering.messages():
        if message.direction == "R" and message.method == "INVITE":
            arrived.setdefault(message.call_id, message.time)
    failover = {cid: arrived[cid] - at for cid, at in resetting.resets.items() if cid in arrived}
    answer = list(caller.answer_delays().values())
    delays = sorted(failover.values())
    print(
        f"{len(resetting.resets)} INVITEs reset, {len(failover)} failed over; RST -> INVITE at"
        f" the next gateway: p50 {percentile(delays, 50) * 1000:.1f} ms, max"
        f" {delays[-1] * 1000:.1f} ms; caller's answer p50 {percentile(answer, 50) * 1000:.1f}"
        f" ms, max {max(answer) * 1000:.1f} ms; {result.summary()}"
    )
    assert result.failed == 0, result.summary() + "\n" + proxy.log()[-3000:]
    assert result.successful == CALLS, result.summary()
    assert set(resetting.resets) == caller.call_ids()  # every call met a reset
    assert set(failover) == caller.call_ids()  # and every one of them was failed over
    assert delays[-1] < 0.1, f"slowest failover {delays[-1]:.3f} s"
    assert max(answer) < ANSWER_TIMEOUT / 5


def _invite(call_id: str, sent_by: tuple[str, int], target: str) -> bytes:
    host, port = sent_by
    return (
        f"INVITE sip:service@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bK-{uuid.uuid4().hex[:12]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:caller@{host}>;tag=c{uuid.uuid4().hex[:6]}\r\n"
        f"To: <sip:service@{target}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{host}:{port};transport=tcp>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _ack(invite: bytes, ok: bytes, sent_by: tuple[str, int]) -> bytes:
    contact = header(ok, "contact", "m").strip("<>").split(">")[0]
    return (
        f"ACK {contact} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {sent_by[0]}:{sent_by[1]};branch=z9hG4bK-{uuid.uuid4().hex[:12]}\r\n"
        f"Route: {header(ok, 'record-route')}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {header(invite, 'from')}\r\nTo: {header(ok, 'to')}\r\n"
        f"Call-ID: {header(invite, 'call-id')}\r\nCSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_responses_reach_the_via_sent_by_once_the_callers_connection_is_closed(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    # The gateway waits 300 ms before its 180: the caller's connection is long closed by then.
    gateway = sipp_lab.gateway(
        "gw", transport="tcp", scenario="uas_hangup", extra_args=["-d", "300"]
    )
    proxy = SipdispatchProxy(tmp_path / "proxy", [gateway], transport="tcp").start()
    proxies.append(proxy)
    sent_by = ("127.0.0.1", free_port())
    call_id = f"closed-{uuid.uuid4().hex[:8]}"
    invite = _invite(call_id, sent_by, proxy.hostport)
    with socket.create_server(sent_by) as listener:
        with socket.create_connection((proxy.ip, proxy.port)) as first:
            first.sendall(invite)
        # closed: the proxy must now open a connection to the Via sent-by for the responses
        listener.settimeout(5.0)
        accepted, _ = listener.accept()
    stream = Stream(accepted)
    try:
        statuses = []
        while not statuses or statuses[-1] < 200:
            response = stream.next()
            assert header(response, "call-id", "i") == call_id
            statuses.append(int(response.split(b" ", 2)[1]))
        assert statuses[-2:] == [180, 200], proxy.log()[-3000:]
        stream.send(_ack(invite, response, sent_by))
        bye = stream.next(within=5.0)  # the gateway hangs up: the BYE finds the caller too
        assert bye.startswith(b"BYE ")
        stream.send(response_to(bye, 200, "OK"))
        assert _bye_answered(sipp_lab, gateway.name, call_id)
    finally:
        stream.close()


def _bye_answered(lab: SippLab, gateway: str, call_id: str, within: float = 5.0) -> bool:
    """Whether the gateway got a 200 to its BYE for ``call_id`` (its log read until then)."""
    [gw] = [g for g in lab.gateways if g.name == gateway]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for message in gw.messages():
            if (message.call_id, message.direction, message.cseq_method, message.status) == (
                call_id,
                "R",
                "BYE",
                200,
            ):
                return True
        time.sleep(0.05)
    return False


def test_a_caller_behind_nat_gets_the_gateways_bye_over_its_own_connection(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gateway = sipp_lab.gateway(
        "gw", transport="tcp", scenario="uas_hangup", extra_args=["-d", "500"]
    )
    proxy = SipdispatchProxy(tmp_path / "proxy", [gateway], transport="tcp").start()
    proxies.append(proxy)
    unreachable = free_port()  # nothing listens there: the Contact of a caller behind NAT
    calls = 20
    caller = sipp_lab.caller(
        proxy.hostport,
        transport="tcp",
        scenario="uac_hungup",
        rate=10,
        calls=calls,
        recv_timeout_ms=5000,
        extra_args=["-key", "contact_port", str(unreachable)],
    )
    result = caller.run()
    byes = {
        m.call_id
        for m in gateway.messages()
        if m.direction == "R" and m.cseq_method == "BYE" and m.status == 200
    }
    print(f"{len(byes)} of {calls} gateway BYEs answered by the caller; {result.summary()}")
    assert result.successful == calls, result.summary() + "\n" + proxy.log()[-3000:]
    assert byes == caller.call_ids()
