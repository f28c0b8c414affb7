"""Responses over a stream (RFC 3261 18.2.2): over the request's connection while it lives,
else to the address the request came from at its Via's sent-by port; the core says both."""

from __future__ import annotations

from coreharness import (
    GW1,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.proxy.core.outbox import stream_fallback
from sipdispatch.sip.values import parse_via

#: a caller behind NAT: it writes its private address in Via, the packets come from another
CALLER_CONNECTION = ("198.51.100.7", 40123)
PRIVATE_VIA = "SIP/2.0/TCP 10.1.1.5:5077;branch=z9hG4bK-s{n}"


def _tcp_invite(n: int, via: str = PRIVATE_VIA) -> bytes:
    """An INVITE whose top Via is ``via``."""
    data = invite(f"stream-{n}")
    start = data.index(b"Via: ") + len(b"Via: ")
    return data[:start] + via.format(n=n).encode() + data[data.index(b"\r\n", start) :]


def test_a_stream_callers_responses_name_the_via_port_at_its_source_as_fallback() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(_tcp_invite(1), CALLER_CONNECTION, "tcp", 0.0)
    [trying] = sent_to(sends, CALLER_CONNECTION)
    assert response_of(trying).status == 100
    assert (trying.transport, trying.fallback) == ("tcp", ("198.51.100.7", 5077))
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    [ok] = proxy.receive(reply(forwarded, 200), address_of(GW1), "udp", 0.1)
    assert response_of(ok).status == 200
    assert (ok.address, ok.fallback) == (CALLER_CONNECTION, ("198.51.100.7", 5077))


def test_a_via_without_a_port_falls_back_to_5060_and_udp_needs_no_fallback() -> None:
    proxy, _ = make_proxy()
    bare = "SIP/2.0/TCP caller.example;branch=z9hG4bK-s{n}"
    [trying, _] = proxy.receive(_tcp_invite(2, bare), CALLER_CONNECTION, "tcp", 0.0)
    assert trying.fallback == ("198.51.100.7", 5060)
    over_udp = proxy.receive(invite(), CALLER_CONNECTION, "udp", 0.0)
    assert [s.fallback for s in over_udp] == [None, None]


def test_the_fallback_port_over_tls_is_5061_and_the_host_is_always_the_source() -> None:
    source = ("203.0.113.9", 50000)
    assert stream_fallback(parse_via("SIP/2.0/TLS a.example;branch=z9hG4bK1"), source) == (
        "203.0.113.9",
        5061,
    )
    # the sent-by host is the sender's say-so: a response never goes to another host
    other = parse_via("SIP/2.0/TCP 192.0.2.99:5080;branch=z9hG4bK1")
    assert stream_fallback(other, source) == ("203.0.113.9", 5080)


def test_the_proxys_own_stateless_answers_over_a_stream_carry_the_fallback() -> None:
    proxy, _ = make_proxy()
    cancel = (
        _tcp_invite(3)
        .replace(b"INVITE sip:", b"CANCEL sip:", 1)
        .replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    )
    [answer] = proxy.receive(cancel, CALLER_CONNECTION, "tcp", 0.0)
    assert response_of(answer).status == 481  # no such transaction
    assert (answer.address, answer.fallback) == (CALLER_CONNECTION, ("198.51.100.7", 5077))


def test_a_relayed_response_to_an_in_dialog_request_carries_the_fallback() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(_tcp_invite(4), CALLER_CONNECTION, "tcp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(reply(forwarded, 200), address_of(GW1), "udp", 0.1)
    bye = (
        "BYE sip:gw@127.0.0.2:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 10.1.1.5:5077;branch=z9hG4bK-bye4\r\n"
        f"Route: {forwarded.headers.get('record-route')}\r\n"
        f"From: {forwarded.headers.get('from')}\r\nTo: {forwarded.headers.get('to')};tag=gw1\r\n"
        f"Call-ID: {forwarded.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    [to_gateway] = proxy.receive(bye, CALLER_CONNECTION, "tcp", 1.0)
    assert to_gateway.address == address_of(GW1)
    [relayed] = proxy.receive(reply(request_of(to_gateway), 200), address_of(GW1), "udp", 1.1)
    assert response_of(relayed).status == 200
    assert (relayed.transport, relayed.address) == ("tcp", CALLER_CONNECTION)
    assert relayed.fallback == ("198.51.100.7", 5077)


def test_a_malformed_via_list_over_a_stream_is_answered_400_without_a_fallback() -> None:
    # Found by hack/fuzz: the list "," failed to split inside the fallback of the 400 itself,
    # and the exception left the core.
    proxy, _ = make_proxy()
    [answer] = proxy.receive(_tcp_invite(3, ","), CALLER_CONNECTION, "tcp", 0.0)
    assert response_of(answer).status == 400
    assert (answer.address, answer.fallback) == (CALLER_CONNECTION, None)
