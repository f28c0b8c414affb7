"""Drives the sans-I/O proxy core with bytes and a hand-moved clock (no sockets)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core import (
    Address,
    CoreSettings,
    Hop,
    Outbox,
    Proxy,
    RequestSelection,
    Selection,
    Send,
    Signer,
    destination_id,
)
from sipdispatch.proxy.events import BranchFailed, CoreEvent
from sipdispatch.sip import codec
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.transaction import Timers

PROXY = ("10.0.0.1", 5060)
CALLER = ("192.0.2.10", 5070)
GW1 = Hop("127.0.0.2", 5060, "udp", DestinationKey.parse(1, "sip:127.0.0.2:5060"))
GW2 = Hop("127.0.0.3", 5060, "udp", DestinationKey.parse(1, "sip:127.0.0.3:5060"))
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


class CoreDriver:
    """Calls a ``Proxy`` as the engine does: each call's sends are handed back, and the events
    each call returns are kept in ``events`` (all so far, in order) and ``last`` (that call's)."""

    def __init__(self, core: Proxy) -> None:
        self.core = core
        self.events: list[CoreEvent] = []
        self.last: list[CoreEvent] = []

    def _take(self, out: Outbox) -> list[Send]:
        self.last = list(out.events)
        self.events += out.events
        return out.sends

    def receive(self, data: bytes, source: Address, transport: str, now: float) -> list[Send]:
        return self._take(self.core.receive(data, source, transport, now))

    def on_timer(self, now: float) -> list[Send]:
        return self._take(self.core.on_timer(now))

    def probe(self, hop: Hop, from_uri: str, timeout: float, now: float) -> tuple[str, list[Send]]:
        probe_id, out = self.core.probe(hop, from_uri, timeout, now)
        return probe_id, self._take(out)

    def transport_failed(self, address: Address, transport: str, now: float) -> list[Send]:
        return self._take(self.core.transport_failed(address, transport, now))

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    def failures(self) -> list[tuple[DestinationKey, int]]:
        """(destination, status) of every ``BranchFailed`` so far."""
        return [(e.destination, e.status) for e in self.events if isinstance(e, BranchFailed)]

    @property
    def transaction_count(self) -> int:
        return self.core.transaction_count

    @property
    def branch_count(self) -> int:
        return self.core.branch_count

    @property
    def remembered_count(self) -> int:
        return self.core.remembered_count

    @property
    def probe_count(self) -> int:
        return self.core.probe_count


def make_proxy(
    hops: Sequence[Hop] = (GW1, GW2), *, secret: bytes = b"s" * 32, **settings: object
) -> tuple[CoreDriver, RoundRobin]:
    selector = RoundRobin(hops)
    core_settings = CoreSettings(
        local={"udp": PROXY, "tcp": PROXY},
        advertise=PROXY,
        timers=Timers(),
        **settings,  # type: ignore[arg-type]
    )
    core = Proxy(core_settings, selector, Signer(secret))
    core.destinations = frozenset(destination_id(h.host, h.port, h.transport) for h in hops)
    return CoreDriver(core), selector


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


def address_of(hop: Hop) -> Address:
    return (hop.host, hop.port)


def sent_to(sends: list[Send], address: Address) -> list[Send]:
    return [s for s in sends if s.address == address]


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
