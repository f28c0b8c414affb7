"""The core at the edge: hostile inputs are answered 400 or dropped and counted, never raised,
and messages over a limit are refused before they are parsed, with the limit named."""

from __future__ import annotations

import pytest
from coreharness import CALLER, GW1, PROXY, address_of, invite, make_proxy, response_of
from hostile import HOSTILE_REQUESTS, bare_branch_response, request

from sipdispatch.proxy.core import Send
from sipdispatch.proxy.events import MessageRejected
from sipdispatch.sip.limits import MessageLimits


@pytest.mark.parametrize("name", HOSTILE_REQUESTS)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_hostile_request_is_answered_400(name: str, transport: str) -> None:
    proxy, _ = make_proxy()
    data = HOSTILE_REQUESTS[name](request(*PROXY, f"h-{name}", transport.upper()))
    sends = proxy.receive(data, CALLER, transport, 0.0)
    assert [(s.address, response_of(s).status) for s in sends] == [(CALLER, 400)]
    assert [e.status for e in proxy.last if isinstance(e, MessageRejected)] == [400]


def test_a_response_to_a_bare_branch_prefix_is_dropped_and_counted() -> None:
    proxy, _ = make_proxy()
    assert proxy.receive(bare_branch_response("bare"), address_of(GW1), "udp", 0.0) == []
    rejected = [e for e in proxy.last if isinstance(e, MessageRejected)]
    assert [(e.kind, e.call_id) for e in rejected] == [("message", "bare")]


def _status(sends: list[Send]) -> list[tuple[int, str]]:
    """Status and reason of each answer to the caller."""
    return [
        (r.status, r.reason) for r in map(response_of, (s for s in sends if s.address == CALLER))
    ]


def test_a_datagram_over_the_size_limit_gets_513_from_its_few_copied_headers() -> None:
    proxy, _ = make_proxy(limits=MessageLimits(max_message_size=2000))
    big = invite(extra="X-Pad: " + "p" * 2500 + "\r\n")
    sends = proxy.receive(big, CALLER, "udp", 0.0)
    assert _status(sends) == [(513, "Message Too Large")]
    answer = response_of(sends[0])
    assert answer.call_id
    assert answer.headers.get("cseq") == "1 INVITE"
    assert len(sends[0].data) < 1000  # the padding is not echoed back
    assert [e.limit for e in proxy.last if isinstance(e, MessageRejected)] == ["message-size"]


@pytest.mark.parametrize(
    ("extra", "limit", "reason"),
    [
        ("".join(f"X-{i}: {i}\r\n" for i in range(120)), "header-count", "Too Many Headers"),
        ("X-Long: " + "y" * 5000 + "\r\n", "line-length", "Header Line Too Long"),
        (
            "".join(f"Via: SIP/2.0/UDP 10.0.0.{i};branch=z9hG4bK{i}\r\n" for i in range(80)),
            "via-count",
            "Too Many Via Entries",
        ),
        (
            "Record-Route: " + ", ".join(["<sip:10.0.0.9;lr>"] * 40) + "\r\n",
            "record-route-count",
            "Too Many Record-Route Entries",
        ),
    ],
)
def test_a_request_over_a_limit_gets_400_naming_it(extra: str, limit: str, reason: str) -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(extra=extra), CALLER, "udp", 0.0)
    assert _status(sends) == [(400, reason)]
    assert [e.limit for e in proxy.last if isinstance(e, MessageRejected)] == [limit]
    assert proxy.transaction_count == 0


def test_a_response_over_a_limit_is_dropped_and_counted() -> None:
    proxy, _ = make_proxy()
    response = bare_branch_response("big").replace(
        b"Content-Length", b"".join(b"X-%d: x\r\n" % i for i in range(200)) + b"Content-Length"
    )
    assert proxy.receive(response, address_of(GW1), "udp", 0.0) == []
    assert [e.limit for e in proxy.last if isinstance(e, MessageRejected)] == ["header-count"]


def test_messages_within_the_limits_are_untouched_by_them() -> None:
    proxy, _ = make_proxy()
    realistic = invite(
        extra="Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, INFO, UPDATE\r\n"
        + "Record-Route: <sip:10.0.0.7;lr>, <sip:10.0.0.8;lr>\r\n"
        + "Identity: "
        + "e" * 1000
        + "\r\n"
    )
    sends = proxy.receive(realistic, CALLER, "udp", 0.0)
    assert address_of(GW1) in [s.address for s in sends]
    assert not [e for e in proxy.last if isinstance(e, MessageRejected)]
