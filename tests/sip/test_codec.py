"""Framing, unfolding, compact forms and serialization of the codec."""

from __future__ import annotations

import pytest

from corpus import MESSAGES
from sipdispatch.sip import codec, values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.limits import LimitExceededError, MessageLimits
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.uri import SipUri, parse_uri, unescape

BY_NAME = {m.name: m.data for m in MESSAGES}


def _request(name: str) -> Request:
    message = codec.parse(BY_NAME[name])
    assert isinstance(message, Request)
    return message


def test_folded_and_odd_headers_are_read_as_written() -> None:
    request = _request("wsinv.dat")
    headers = request.headers
    assert int(headers.get("max-forwards") or "") == 68
    assert values.parse_cseq(headers.get("cseq") or "") == values.CSeq(9, "INVITE")
    assert headers.get("unknownheaderwithunusualvalue") == ";;,,;;,;"
    assert headers.get("subject") == ""
    vias = [values.parse_via(v) for v in headers.values("via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    to = values.parse_name_addr(headers.get("to") or "")
    assert to.tag == "1918181833n"
    contact = values.parse_name_addr(headers.get("contact") or "")
    assert contact.params == {"newparam": "newvalue", "secondparam": "", "q": "0.33"}
    assert len(request.body) == 150


def test_datagram_noise_after_the_body_is_ignored() -> None:
    request = _request("dblreq.dat")
    assert request.method == "REGISTER"
    assert request.body == b""


def test_body_without_content_length_is_the_rest_of_the_datagram() -> None:
    request = _request("inv2543.dat")
    assert request.body.startswith(b"v=0")
    assert request.body.endswith(b"\r\n")


def test_binary_body_is_framed_by_content_length() -> None:
    request = _request("mpart01.dat")
    assert len(request.body) == 553
    assert b"\x00" in request.body


def test_serialization_round_trips_and_fixes_content_length() -> None:
    request = _request("inv2543.dat")
    again = codec.parse(request.to_bytes(), datagram=False)
    assert isinstance(again, Request)
    assert again.body == request.body
    assert again.headers.get("content-length") == str(len(request.body))
    assert [h[1:] for h in again.headers][:-1] == [h[1:] for h in request.headers]


def test_escaped_user_parts_unescape_once() -> None:
    uri = parse_uri(_request("semiuri.dat").uri)
    assert isinstance(uri, SipUri)
    assert unescape(uri.user or "") == "user;par=u@example.net"
    to = values.parse_name_addr(_request("escnull.dat").headers.get("to") or "")
    assert isinstance(to.uri, SipUri)
    assert unescape(to.uri.user or "") == "null-\x00-null"


def test_ipv6_references() -> None:
    good = parse_uri("sip:[2001:db8::10]:5070")
    assert isinstance(good, SipUri)
    assert (good.host, good.port, good.host_address) == ("[2001:db8::10]", 5070, "2001:db8::10")
    ambiguous = parse_uri("sip:[2001:db8::10:5070]")
    assert isinstance(ambiguous, SipUri)
    assert ambiguous.port is None
    with pytest.raises(RemoteProtocolError):
        parse_uri("sip:2001:db8::10")


def test_responses_keep_an_empty_reason() -> None:
    message = codec.parse(BY_NAME["noreason.dat"])
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (100, "")


def test_a_start_line_read_before_reads_alike_with_its_own_headers() -> None:
    head = "Via: SIP/2.0/UDP h;branch=z9hG4bK{n}\r\nCall-ID: c{n}\r\nCSeq: 1 INVITE\r\n\r\n"
    seen = []
    for n in range(2):  # the second time from memory
        response = codec.parse(f"SIP/2.0 183 Session Progress\r\n{head}".format(n=n).encode())
        request = codec.parse(f"INVITE sip:+15550100@gw SIP/2.0\r\n{head}".format(n=n).encode())
        assert isinstance(response, Response)
        assert isinstance(request, Request)
        assert (response.status, response.reason, response.version) == (
            183,
            "Session Progress",
            "SIP/2.0",
        )
        assert (request.method, request.uri, request.version) == (
            "INVITE",
            "sip:+15550100@gw",
            "SIP/2.0",
        )
        seen += [response.call_id, request.call_id]
        with pytest.raises(codec.MessageError):  # and a bad one stays bad
            codec.parse(BY_NAME["lwsstart.dat"])
    assert seen == ["c0", "c0", "c1", "c1"]


def test_bad_request_line_keeps_headers_for_the_400() -> None:
    with pytest.raises(codec.MessageError) as info:
        codec.parse(BY_NAME["lwsstart.dat"])
    assert isinstance(info.value.partial, Request)
    assert info.value.partial.headers.get("call-id")


def test_stream_framer_cuts_messages_and_skips_keepalives() -> None:
    one = _request("esc01.dat").to_bytes()
    two = _request("lwsdisp.dat").to_bytes()
    framer = codec.StreamFramer()
    stream = b"\r\n\r\n" + one + two
    out: list[bytes] = []
    for i in range(0, len(stream), 7):  # arbitrary chunking
        out += framer.feed(stream[i : i + 7])
    assert out == [one, two]


def test_stream_framer_requires_content_length_and_bounds_size() -> None:
    without = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"
    assert codec.StreamFramer().feed(without) == [without]  # passed on to be answered
    with pytest.raises(codec.MessageError, match="Content-Length is required"):
        codec.parse(without, datagram=False)
    with pytest.raises(RemoteProtocolError) as info:
        codec.StreamFramer(max_size=100).feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 200)
    assert info.value.status == 513


@pytest.mark.parametrize("value", ["\u00b2", "1\u0663", "+5", "99999999999"])
def test_an_unreadable_content_length_is_answered_and_the_stream_goes_on(value: str) -> None:
    bad = f"OPTIONS sip:a SIP/2.0\r\nl: {value}\r\n\r\n".encode()
    good = b"OPTIONS sip:a SIP/2.0\r\nl: 2\r\n\r\nok"
    assert codec.StreamFramer().feed(bad + good) == [bad, good]
    with pytest.raises(codec.MessageError, match="Content-Length"):
        codec.parse(bad, datagram=False)


def test_stream_framer_passes_an_oversized_message_on_bodiless_and_goes_on() -> None:
    big = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 300\r\n\r\n" + b"x" * 300
    after = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    framer = codec.StreamFramer(max_size=200)
    stream = big + after
    out: list[bytes] = []
    for i in range(0, len(stream), 64):  # the body arrives in pieces, after its head
        out += framer.feed(stream[i : i + 64])
    assert out == [big[: big.index(b"\r\n\r\n") + 4], after]
    with pytest.raises(LimitExceededError) as info:
        codec.parse(out[0], datagram=False, limits=MessageLimits(max_message_size=200))
    assert (info.value.status, info.value.reason, info.value.limit) == (
        513,
        "Message Too Large",
        "message-size",
    )


def test_keepalive() -> None:
    assert codec.is_keepalive(b"\r\n\r\n")
    assert not codec.is_keepalive(b"OPTIONS")
