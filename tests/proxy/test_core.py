"""The proxy core over bytes: call flows, failover, CANCEL, in-dialog routing, refusals."""

from __future__ import annotations

import pytest
from coreharness import (
    CALLER,
    GW1,
    GW2,
    PROXY,
    CoreDriver,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.proxy.core import Send
from sipdispatch.proxy.events import BranchAnswered
from sipdispatch.sip import codec
from sipdispatch.sip.message import Request
from sipdispatch.sip.values import parse_name_addr, parse_via


def _establish(proxy: CoreDriver, now: float = 0.0) -> tuple[Request, Request, bytes]:
    """INVITE through the proxy to GW1, answered 200; returns (forwarded INVITE, 200 seen by
    the caller as a request-shaped view, raw 200 bytes)."""
    sends = proxy.receive(invite(), CALLER, "udp", now)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    ok = reply(forwarded, 200, contact="sip:gw@127.0.0.2:5060")
    upstream = proxy.receive(ok, address_of(GW1), "udp", now + 0.05)
    assert len(upstream) == 1
    return forwarded, request_of_response_route(upstream[0]), ok


def request_of_response_route(send: Send) -> Request:
    """Build the caller's in-dialog BYE from the 200 it received (Route = Record-Route)."""
    response = response_of(send)
    route = response.headers.get("record-route") or ""
    to = response.headers.get("to") or ""
    from_ = response.headers.get("from") or ""
    text = (
        "BYE sip:gw@127.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-bye1\r\n"
        f"Route: {route}\r\nFrom: {from_}\r\nTo: {to}\r\n"
        f"Call-ID: {response.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = codec.parse(text.encode())
    assert isinstance(message, Request)
    return message


def test_invite_is_answered_100_and_forwarded_with_via_and_signed_record_route() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    trying = response_of(sent_to(sends, CALLER)[0])
    assert trying.status == 100
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    top = parse_via(forwarded.headers.first_value("via") or "")
    assert (top.host, top.port) == PROXY
    assert (top.branch or "").startswith("z9hG4bK")
    second = parse_via(forwarded.headers.values("via")[1])
    assert "received" not in second.params  # the caller sent from the address in its Via
    assert second.params["rport"] == str(CALLER[1])
    assert forwarded.headers.get("max-forwards") == "69"
    rr = parse_name_addr(forwarded.headers.get("record-route") or "")
    assert str(rr.uri).startswith(f"sip:{PROXY[0]}:{PROXY[1]};lr;")
    assert rr.uri.param("sig")  # type: ignore[union-attr]


def test_via_records_a_natted_source_and_responses_go_back_there() -> None:
    proxy, _ = make_proxy()
    natted = ("203.0.113.5", 40000)
    sends = proxy.receive(invite(), natted, "udp", 0.0)
    assert [s.address for s in sent_to(sends, natted)]  # the 100 Trying
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    second = parse_via(forwarded.headers.values("via")[1])
    assert (second.params["received"], second.params["rport"]) == ("203.0.113.5", "40000")
    ringing = proxy.receive(reply(forwarded, 180), address_of(GW1), "udp", 0.1)
    assert [s.address for s in ringing] == [natted]


@pytest.mark.parametrize(
    ("written", "stamped"),
    [
        # as written, with the two parameters added (RFC 3261 18.2.1, RFC 3581)
        ("SIP/2.0/udp {at};Branch=z9hG4bK-w1;x",
         "SIP/2.0/udp {at};Branch=z9hG4bK-w1;x;rport={port}"),
        ("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-w2",
         "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-w2;received={host};rport={port}"),
        # rport asked for, received written, a name twice: written anew
        ("SIP/2.0/UDP {at};rport;branch=z9hG4bK-w3",
         "SIP/2.0/UDP {at};branch=z9hG4bK-w3;rport={port}"),
        ("SIP/2.0/UDP {at};received=192.0.2.9;branch=z9hG4bK-w4",
         "SIP/2.0/UDP {at};branch=z9hG4bK-w4;rport={port}"),
        ("SIP/2.0/UDP {at};x=1;x=2;branch=z9hG4bK-w5",
         "SIP/2.0/UDP {at};x=2;branch=z9hG4bK-w5;rport={port}"),
    ],
)  # fmt: skip
def test_the_callers_via_is_forwarded_with_where_the_request_came_from(
    written: str, stamped: str
) -> None:
    proxy, _ = make_proxy()
    fields = {"at": f"{CALLER[0]}:{CALLER[1]}", "host": CALLER[0], "port": CALLER[1]}
    data = invite().replace(
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=".encode(),
        f"Via: {written.format(**fields)}\r\nX-Old-Branch: ".encode(),
    )
    sends = proxy.receive(data, CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    assert forwarded.headers.values("via")[1] == stamped.format(**fields)


def test_call_flow_through_the_proxy_reaches_the_answering_gateway() -> None:
    proxy, _ = make_proxy()
    _, bye, _ = _establish(proxy)
    sends = proxy.receive(bye.to_bytes(), CALLER, "udp", 1.0)
    assert [s.address for s in sends] == [address_of(GW1)]
    routed = request_of(sends[0])
    assert routed.method == "BYE"
    assert routed.headers.get("route") is None  # our own Route entry was consumed
    ok = proxy.receive(reply(routed, 200), address_of(GW1), "udp", 1.1)
    assert [s.address for s in ok] == [CALLER]
    assert response_of(ok[0]).status == 200
    assert len(response_of(ok[0]).headers.values("via")) == 1


def test_round_robin_spreads_calls() -> None:
    proxy, _ = make_proxy()
    first = proxy.receive(invite(), CALLER, "udp", 0.0)
    second = proxy.receive(invite(), CALLER, "udp", 0.0)
    assert sent_to(first, address_of(GW1))
    assert sent_to(second, address_of(GW2))


def test_failover_on_503_acks_and_tries_the_next_destination() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    to_gw1 = request_of(sent_to(sends, address_of(GW1))[0])
    sends = proxy.receive(reply(to_gw1, 503), address_of(GW1), "udp", 0.1)
    ack = request_of(sent_to(sends, address_of(GW1))[0])
    assert ack.method == "ACK"
    assert ack.headers.first_value("via") == to_gw1.headers.first_value("via")
    to_gw2 = request_of(sent_to(sends, address_of(GW2))[0])
    assert to_gw2.method == "INVITE"
    assert not sent_to(sends, CALLER)  # the caller never sees the 503
    done = proxy.receive(reply(to_gw2, 200, to_tag="gw2"), address_of(GW2), "udp", 0.2)
    assert response_of(sent_to(done, CALLER)[0]).status == 200
    assert (GW1.key, 503) in proxy.failures()
    assert any(isinstance(e, BranchAnswered) and e.destination == GW2.key for e in proxy.events)


def test_no_answer_within_the_answer_timeout_fails_over() -> None:
    proxy, _ = make_proxy(answer_timeout=2.0)
    proxy.receive(invite(), CALLER, "udp", 0.0)
    retransmits = proxy.on_timer(0.5)
    assert [s.address for s in retransmits] == [address_of(GW1)]  # Timer A
    deadline = proxy.next_deadline()
    sends: list[Send] = []
    while deadline is not None and deadline <= 2.0:
        sends += proxy.on_timer(deadline)
        deadline = proxy.next_deadline()
    to_gw2 = [request_of(s) for s in sent_to(sends, address_of(GW2))]
    assert [r.method for r in to_gw2] == ["INVITE"]
    assert (GW1.key, 408) in proxy.failures()


def test_when_every_destination_fails_the_caller_gets_the_best_response() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    sends = proxy.receive(
        reply(request_of(sent_to(sends, address_of(GW1))[0]), 503), address_of(GW1), "udp", 0.1
    )
    to_gw2 = request_of(sent_to(sends, address_of(GW2))[0])
    sends = proxy.receive(reply(to_gw2, 500), address_of(GW2), "udp", 0.2)
    final = response_of(sent_to(sends, CALLER)[0])
    assert final.status == 500  # 503 ranks below other 5xx (RFC 3261 16.7)


def test_non_failover_response_goes_straight_to_the_caller() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    sends = proxy.receive(
        reply(request_of(sent_to(sends, address_of(GW1))[0]), 486), address_of(GW1), "udp", 0.1
    )
    assert response_of(sent_to(sends, CALLER)[0]).status == 486
    assert not sent_to(sends, address_of(GW2))


def test_cancel_stops_the_branch_and_the_caller_gets_487() -> None:
    proxy, _ = make_proxy()
    raw = invite(branch="z9hG4bK-cancelme")
    sends = proxy.receive(raw, CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    ringing = proxy.receive(reply(forwarded, 180), address_of(GW1), "udp", 0.1)
    assert response_of(ringing[0]).status == 180
    cancel = raw.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
    sends = proxy.receive(cancel, CALLER, "udp", 0.2)
    assert response_of(sent_to(sends, CALLER)[0]).status == 200
    downstream_cancel = request_of(sent_to(sends, address_of(GW1))[0])
    assert downstream_cancel.method == "CANCEL"
    assert downstream_cancel.headers.first_value("via") == forwarded.headers.first_value("via")
    sends = proxy.receive(reply(forwarded, 487), address_of(GW1), "udp", 0.3)
    assert response_of(sent_to(sends, CALLER)[0]).status == 487
    assert not sent_to(sends, address_of(GW2))  # a cancelled call does not fail over


def test_invite_retransmission_is_absorbed_and_answered_from_state() -> None:
    proxy, _ = make_proxy()
    raw = invite()
    proxy.receive(raw, CALLER, "udp", 0.0)
    again = proxy.receive(raw, CALLER, "udp", 0.4)
    assert [(s.address, response_of(s).status) for s in again] == [(CALLER, 100)]


def test_forged_or_unsigned_routes_are_refused() -> None:
    proxy, _ = make_proxy()
    _, bye, _ = _establish(proxy)
    forged = bye.to_bytes().replace(b";sig=", b";sig=00")
    assert response_of(proxy.receive(forged, CALLER, "udp", 1.0)[0]).status == 403
    unsigned = invite(extra=f"Route: <sip:{PROXY[0]}:{PROXY[1]};lr>\r\n")
    assert response_of(proxy.receive(unsigned, CALLER, "udp", 1.0)[0]).status == 403
    elsewhere = invite(extra="Route: <sip:evil.example;lr>\r\n")
    assert response_of(proxy.receive(elsewhere, CALLER, "udp", 1.0)[0]).status == 403


def test_routes_signed_by_another_secret_are_refused() -> None:
    proxy, _ = make_proxy(secret=b"a" * 32)
    other, _ = make_proxy(secret=b"b" * 32)
    _, bye, _ = _establish(proxy)
    assert response_of(other.receive(bye.to_bytes(), CALLER, "udp", 1.0)[0]).status == 403


def test_any_replica_with_the_shared_secret_routes_the_dialog() -> None:
    first, _ = make_proxy()
    second, _ = make_proxy()
    _, bye, _ = _establish(first)
    sends = second.receive(bye.to_bytes(), CALLER, "udp", 1.0)
    assert [s.address for s in sends] == [address_of(GW1)]


def test_gateway_initiated_bye_goes_to_the_caller_only_from_the_gateway() -> None:
    proxy, _ = make_proxy()
    forwarded, _, _ = _establish(proxy)
    route = forwarded.headers.get("record-route") or ""
    bye = (
        f"BYE sip:alice@{CALLER[0]}:{CALLER[1]} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-gwbye\r\n"
        f"Route: {route}\r\n"
        f"From: {forwarded.headers.get('to')};tag=gw1\r\nTo: {forwarded.headers.get('from')}\r\n"
        f"Call-ID: {forwarded.call_id}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    sends = proxy.receive(bye, address_of(GW1), "udp", 1.0)
    assert [s.address for s in sends] == [CALLER]
    spoofed = proxy.receive(bye, ("198.51.100.7", 5060), "udp", 1.0)
    assert response_of(spoofed[0]).status == 403


def test_refusals_of_rfc_3261_16_3() -> None:
    proxy, _ = make_proxy()
    zero = invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert response_of(proxy.receive(zero, CALLER, "udp", 0.0)[0]).status == 483
    required = invite(extra="Proxy-Require: foo\r\n")
    answer = response_of(proxy.receive(required, CALLER, "udp", 0.0)[0])
    assert answer.status == 420
    assert answer.headers.get("unsupported") == "foo"
    assert proxy.transaction_count == 0


def test_malformed_request_gets_400_and_leaves_no_state() -> None:
    proxy, _ = make_proxy()
    bad = invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 OPTIONS")
    sends = proxy.receive(bad, CALLER, "udp", 0.0)
    assert [(s.address, response_of(s).status) for s in sends] == [(CALLER, 400)]
    assert proxy.transaction_count == 0
    assert proxy.receive(b"\x00\xff garbage", CALLER, "udp", 0.0) == []


def test_responses_with_a_via_we_did_not_write_are_dropped() -> None:
    proxy, _ = make_proxy()
    _, bye, _ = _establish(proxy)
    routed = request_of(proxy.receive(bye.to_bytes(), CALLER, "udp", 1.0)[0])
    ours = reply(routed, 200)
    tampered = ours.replace(CALLER[0].encode(), b"198.51.100.99")
    assert proxy.receive(tampered, address_of(GW1), "udp", 1.1) == []
    assert proxy.receive(ours, address_of(GW1), "udp", 1.1)


def test_a_response_with_the_callers_via_params_reordered_is_relayed() -> None:
    """Asterisk's PJSIP writes the Via parameters of a response in its own order (``rport=N;
    branch=...`` for ``branch=...;rport=N``): equal by RFC 3261 20.42, so relayed."""
    proxy, _ = make_proxy()
    _, bye, _ = _establish(proxy)
    routed = request_of(proxy.receive(bye.to_bytes(), CALLER, "udp", 1.0)[0])
    caller_via = routed.headers.values("via")[1]
    assert ";branch=z9hG4bK-bye1;rport=" in caller_via
    head, _, rport = caller_via.partition(";branch=z9hG4bK-bye1;")
    reordered = f"{head};{rport};BRANCH=z9hG4bK-bye1"
    answer = reply(routed, 200).replace(caller_via.encode(), reordered.encode())
    assert reordered.encode() in answer
    relayed = proxy.receive(answer, address_of(GW1), "udp", 1.1)
    assert [s.address for s in relayed] == [CALLER]
    assert response_of(relayed[0]).status == 200


def test_options_to_the_balancer_itself_is_answered_locally() -> None:
    proxy, selector = make_proxy()
    options = (
        f"OPTIONS sip:{PROXY[0]}:{PROXY[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-opt\r\n"
        "From: <sip:mon@x>;tag=1\r\nTo: <sip:lb@x>\r\nCall-ID: opt1\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    assert response_of(proxy.receive(options, CALLER, "udp", 0.0)[0]).status == 200
    assert selector.seen == []


def test_every_transaction_is_forgotten_once_its_timers_run_out() -> None:
    proxy, _ = make_proxy()
    _establish(proxy)
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    proxy.receive(
        reply(request_of(sent_to(sends, address_of(GW2))[0]), 486), address_of(GW2), "udp", 0.1
    )
    proxy.receive(invite(), CALLER, "udp", 0.0)  # never answered at all
    now = 0.0
    while (deadline := proxy.next_deadline()) is not None and deadline < 1000:
        now = deadline
        proxy.on_timer(now)
    assert proxy.next_deadline() is None
    assert (proxy.transaction_count, proxy.branch_count, proxy.remembered_count) == (0, 0, 0)


def test_after_a_2xx_only_a_flat_record_answers_a_retransmitted_invite() -> None:
    proxy, _ = make_proxy()
    raw = invite()
    sends = proxy.receive(raw, CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    ok = reply(forwarded, 200)
    proxy.receive(ok, address_of(GW1), "udp", 0.1)
    assert (proxy.transaction_count, proxy.branch_count, proxy.remembered_count) == (0, 0, 1)
    again = proxy.receive(raw, CALLER, "udp", 0.2)
    assert [(s.address, response_of(s).status) for s in again] == [(CALLER, 200)]
    # A 2xx retransmitted by the gateway still reaches the caller, statelessly.
    late = proxy.receive(ok, address_of(GW1), "udp", 0.6)
    assert [(s.address, response_of(s).status) for s in late] == [(CALLER, 200)]
    # Once the record expires nothing is left, and a forged late 2xx is not reflected.
    assert proxy.on_timer(100.0) == []
    assert proxy.remembered_count == 0
    forged = ok.replace(CALLER[0].encode(), b"198.51.100.99")
    assert proxy.receive(forged, address_of(GW1), "udp", 100.1) == []


def test_timer_entries_of_finished_calls_do_not_pile_up() -> None:
    proxy, _ = make_proxy()
    for n in range(3000):
        sends = proxy.receive(invite(), CALLER, "udp", n * 0.001)
        forwarded = request_of(next(s for s in sends if s.address != CALLER))
        gateway = next(s.address for s in sends if s.address != CALLER)
        proxy.receive(reply(forwarded, 180), gateway, "udp", n * 0.001)  # Timer C: 180 s ahead
        proxy.receive(reply(forwarded, 200), gateway, "udp", n * 0.001)
    assert proxy.transaction_count == 0
    deadlines = proxy.core._deadlines
    assert len(deadlines._heap) <= 4 * len(deadlines._timed) + 1024


def test_calls_through_the_core_leave_no_reference_cycles() -> None:
    """Reference counting alone frees every finished call: the cycle collector has nothing
    of the hot path to find, so its pauses stay short under load (cli._tune_gc)."""
    import gc  # noqa: PLC0415 - this test alone inspects the collector

    proxy, _ = make_proxy()
    gc.collect()
    gc.disable()
    try:
        for n in range(200):
            sends = proxy.receive(invite(), CALLER, "udp", n * 0.01)
            forwarded = request_of(next(s for s in sends if s.address != CALLER))
            gateway = next(s.address for s in sends if s.address != CALLER)
            status = 200 if n % 2 else 503  # answered, and failed over
            proxy.receive(reply(forwarded, 180), gateway, "udp", n * 0.01)
            proxy.receive(reply(forwarded, status), gateway, "udp", n * 0.01)
        while (deadline := proxy.next_deadline()) is not None:
            proxy.on_timer(deadline)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0
