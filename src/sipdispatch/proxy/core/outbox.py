"""What one call into the core gives back (``Outbox``), and the messages it writes itself.

Every entry point of the core starts an ``Outbox``, the components put the datagrams to send
and the facts to report in it, and the entry point returns it: nothing is left behind on the
core between calls.

RFC 3261 8.2.6 (responses), 17.1.1.3 (ACK for a non-2xx final) and 9.1 (CANCEL) say exactly
which header fields the proxy's own messages copy; the builders below do that and nothing else.
"""

from __future__ import annotations

import zlib
from typing import Final

from sipdispatch.proxy.core.policy import PolicyRefusalError
from sipdispatch.proxy.core.records import Address, Hop, Listener, Send
from sipdispatch.proxy.events import CoreEvent, MessageRejected
from sipdispatch.sip import grammar, values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.limits import LimitExceededError
from sipdispatch.sip.message import Headers, Request, Response
from sipdispatch.sip.uri import format_host

__all__ = [
    "BRANCH_PREFIX",
    "REASONS",
    "Outbox",
    "build_ack",
    "build_cancel",
    "build_response",
    "count_hop",
    "stream_fallback",
    "to_tag_for",
    "via_value",
]


class Outbox:
    """The sends and the events of one call into the core, in the order they happened."""

    __slots__ = ("events", "sends")

    def __init__(self) -> None:
        self.sends: list[Send] = []
        self.events: list[CoreEvent] = []

    def send(self, hop: Hop, data: bytes, listener: Listener | None) -> None:
        self.sends.append(Send(hop.transport, (hop.host, hop.port), data, None, listener))

    def send_back(
        self, upstream: tuple[Listener, Address], data: bytes, fallback: Address | None = None
    ) -> None:
        """Send to where a request came from (the listener it arrived on, its source); over
        a stream, to ``fallback`` (`stream_fallback`) once that connection is gone."""
        listener, address = upstream
        self.sends.append(Send(listener.transport, address, data, fallback, listener))

    def report(self, event: CoreEvent) -> None:
        self.events.append(event)

    def respond(
        self,
        request: Request,
        status: int,
        source: Address,
        listener: Listener,
        *,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """A stateless response of our own, sent back where the request came from."""
        response = build_response(request, status, reason, extra)
        transport = listener.transport
        fallback = None if transport == "udp" else _fallback_of(request, source)
        self.sends.append(Send(transport, source, response.to_bytes(), fallback, listener))

    def reject(
        self,
        partial: Request | Response | None,
        exc: RemoteProtocolError,
        source: Address,
        listener: Listener,
    ) -> None:
        """Answer a malformed request if it can be answered at all, and report it once.

        The answer goes back to the source address, not by Via: the Via may be what is broken.
        A request without any Via, and an ACK, cannot be answered.
        """
        self.rejected(partial, exc, source)
        if not isinstance(partial, Request) or partial.method == "ACK":
            return
        if partial.headers.get("via") is None:
            return
        self.respond(partial, exc.status, source, listener, reason=exc.reason)

    def rejected(
        self, message: Request | Response | None, exc: RemoteProtocolError, source: Address | None
    ) -> None:
        kind = "request" if isinstance(message, Request) else "message"
        call_id = message.call_id if message is not None else "?"
        limit = exc.limit if isinstance(exc, LimitExceededError) else ""
        rule = exc.rule if isinstance(exc, PolicyRefusalError) else ""
        self.events.append(
            MessageRejected(exc.status, str(exc), kind, call_id, source, limit, rule)
        )


REASONS: Final = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}
_COPIED: Final = ("via", "from", "to", "call-id", "cseq")


def to_tag_for(request: Request) -> str:
    """A To tag for the proxy's own responses, the same on every replica for one request."""
    seed = f"{request.call_id}|{request.headers.get('cseq')}".encode("utf-8", "surrogateescape")
    return f"sd{zlib.crc32(seed):08x}"


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    """A response to ``request`` made by the proxy (copies Via, From, To, Call-ID, CSeq).

    A To tag is added to every response but 100 Trying, which never carries one."""
    headers = Headers()
    for key, name, value in request.headers:
        if key in _COPIED:
            tagless = key == "to" and status > 100 and ";tag=" not in value.replace(" ", "").lower()
            headers.append(name, f"{value};tag={to_tag_for(request)}" if tagless else value)
    for name, value in extra or ():
        headers.append(name, value)
    headers.append("Server", "sipdispatch")
    return Response(status, reason or REASONS.get(status, "Unknown"), headers)


def _hop_request(invite: Request, method: str, via: str, to: str) -> Request:
    headers = Headers()
    headers.append("Via", via)
    for key, name, value in invite.headers:
        if key in ("from", "call-id", "route"):
            headers.append(name, value)
    headers.append("To", to)
    cseq_number = (invite.headers.get("cseq") or "0").split()[0]
    headers.append("CSeq", f"{cseq_number} {method}")
    headers.append("Max-Forwards", "70")
    return Request(method, invite.uri, headers)


def build_ack(invite: Request, via: str, response: Response) -> Request:
    """The ACK for a non-2xx final response to ``invite`` (same branch, the response's To)."""
    return _hop_request(invite, "ACK", via, response.headers.get("to") or "")


def build_cancel(invite: Request, via: str) -> Request:
    """A CANCEL for the INVITE sent with Via ``via`` (RFC 3261 9.1)."""
    return _hop_request(invite, "CANCEL", via, invite.headers.get("to") or "")


def stream_fallback(via: values.Via, source: Address) -> Address:
    """Where a response goes over a stream once the request's connection is gone (RFC 3261
    18.2.2): the address the request came from (its Via's ``received``) at the Via's sent-by
    port (5060 by default, 5061 over TLS). Never another host than the source's: the sent-by
    host is the sender's say-so, and a response sent there would make the proxy a reflector."""
    return (source[0], via.port or (5061 if via.transport.upper() == "TLS" else 5060))


def _fallback_of(request: Request, source: Address) -> Address | None:
    """`stream_fallback` for a request whose Via may be what is broken (then None)."""
    try:
        value = request.headers.first_value("via")  # splitting the list may fail already
        return None if value is None else stream_fallback(values.parse_via(value), source)
    except RemoteProtocolError:
        return None


#: every branch the proxy writes starts so; the next letter says who sent the request
#: (``T`` a transaction's branch, ``S`` a stateless forward, ``P`` a probe)
BRANCH_PREFIX: Final = values.MAGIC_COOKIE + "sd"


def via_value(transport: str, local: Address, branch: str) -> str:
    """The proxy's own Via for a request sent over ``transport`` from ``local``."""
    return f"SIP/2.0/{transport.upper()} {format_host(local[0], local[1])};branch={branch};rport"


def count_hop(request: Request, ceiling: int = 255) -> None:
    """Max-Forwards one lower, or 70 when the request had none (RFC 3261 16.6 step 3), and
    never over ``ceiling`` (a sender's 255 would let a loop run 255 hops)."""
    headers = request.headers
    max_forwards = headers.get("max-forwards")
    hops = 70 if max_forwards is None else grammar.number(max_forwards) - 1
    headers.set("Max-Forwards", str(hops if hops <= ceiling else ceiling))
