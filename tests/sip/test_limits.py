"""The message limits, on their own: exact list counts, and what salvage keeps."""

from __future__ import annotations

import pytest

from sipdispatch.sip import codec
from sipdispatch.sip.limits import LimitExceededError, MessageLimits, salvage

HEAD = "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"


def _parse(extra: str, limits: MessageLimits) -> None:
    codec.parse(f"{HEAD}{extra}Content-Length: 0\r\n\r\n".encode(), limits=limits)


def test_commas_inside_a_list_element_are_not_counted_as_elements() -> None:
    limits = MessageLimits(max_route=2)
    quoted = '"a, b, c, d, e" <sip:x;lr>, <sip:y;lr>'
    _parse(f"Route: {quoted}\r\n", limits)  # two elements, five commas
    with pytest.raises(LimitExceededError) as info:
        _parse(f"Route: {quoted}\r\nRoute: <sip:z;lr>\r\n", limits)
    assert (info.value.limit, info.value.reason) == ("route-count", "Too Many Route Entries")


def test_compact_via_headers_count_towards_the_via_limit() -> None:
    with pytest.raises(LimitExceededError) as info:
        _parse(
            "v: SIP/2.0/UDP g\r\nVia: SIP/2.0/UDP i, SIP/2.0/UDP j\r\n", MessageLimits(max_via=3)
        )
    assert info.value.limit == "via-count"


def test_salvage_keeps_the_first_of_each_copied_header_bounded() -> None:
    data = (
        HEAD + "Via: SIP/2.0/UDP second\r\nf: <sip:a@b>;tag=1\r\nt: <sip:b@c>\r\n"
        "i: call-1\r\nCSeq: 1 OPTIONS\r\nX-Junk: " + "j" * 5000 + "\r\n"
        "Call-ID: call-2\r\nContent-Length: 0\r\n\r\nbody"
    ).encode()
    request = salvage(data)
    assert request is not None
    assert request.method == "OPTIONS"
    assert [(k, v) for k, _, v in request.headers] == [
        ("via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
        ("from", "<sip:a@b>;tag=1"),
        ("to", "<sip:b@c>"),
        ("call-id", "call-1"),
        ("cseq", "1 OPTIONS"),
    ]
    huge = salvage(HEAD.encode() + b"Call-ID: " + b"c" * 9000 + b"\r\n\r\n")
    assert huge is not None
    assert len(huge.call_id) == 1024  # an answer is never much larger than its request
    assert salvage(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n") is None
