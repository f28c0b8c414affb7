"""Drives the sans-I/O proxy core with bytes and a hand-moved clock (no sockets)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sipdispatch.proxy.core import CoreSettings, Hop, Proxy, Selection, Send
from sipdispatch.proxy.selection import RequestSelection
from sipdispatch.proxy.signing import Signer
from sipdispatch.sip import codec
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.transaction import Timers

PROXY = ("10.0.0.1", 5060)
CALLER = ("192.0.2.10", 5070)
GW1 = Hop("127.0.0.2", 5060, "udp", "sip:127.0.0.2:5060", 1)
GW2 = Hop("127.0.0.3", 5060, "udp", "sip:127.0.0.3:5060", 1)
_ids = itertools.count(1)


class RoundRobin:
    """A minimal selector: rotate over the hops, the rest of the list is the failover order."""

    def __init__(self, hops: Sequence[Hop]) -> None:
        self.hops = list(hops)
        self.parallel = False
        self.next = 0
        self.seen: list[RequestSelection] = []

    def __call__(self, ctx: RequestSelection) -> Selection:
        self.seen.append(ctx)
        start = self.next % len(self.hops) if self.hops else 0
        self.next += 1
        return Selection(self.hops[start:] + self.hops[:start], parallel=self.parallel)


def make_proxy(
    hops: Sequence[Hop] = (GW1, GW2), *, secret: bytes = b"s" * 32, **settings: object
) -> tuple[Proxy, RoundRobin]:
    selector = RoundRobin(hops)
    core_settings = CoreSettings(
        local={"udp": PROXY, "tcp": PROXY},
        advertise=PROXY,
        timers=Timers(),
        **settings,  # type: ignore[arg-type]
    )
    return Proxy(core_settings, selector, Signer(secret)), selector


def invite(call_id: str | None = None, *, branch: str | None = None, extra: str = "") -> bytes:
    n = next(_ids)
    call_id = call_id or f"call-{n}@caller"
    branch = branch or f"z9hG4bK-c{n}"
    return (
        f"INVITE sip:service@{PROXY[0]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@caller.example>;tag=a{n}\r\n"
        "To: <sip:service@lb.example>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{CALLER[0]}:{CALLER[1]}>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def parsed(send: Send) -> Request | Response:
    return codec.parse(send.data)


def request_of(send: Send) -> Request:
    message = parsed(send)
    assert isinstance(message, Request)
    return message


def response_of(send: Send) -> Response:
    message = parsed(send)
    assert isinstance(message, Response)
    return message


def reply(
    request: Request, status: int, *, to_tag: str = "gw1", contact: str | None = None
) -> bytes:
    """What a gateway answers: copies Via, From, To (+tag), Call-ID, CSeq, Record-Route."""
    lines = [f"SIP/2.0 {status} Whatever"]
    for key, name, value in request.headers:
        if key in ("via", "from", "call-id", "cseq", "record-route"):
            lines.append(f"{name}: {value}")
        elif key == "to":
            lines.append(f"{name}: {value}" + (f";tag={to_tag}" if status > 100 else ""))
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
