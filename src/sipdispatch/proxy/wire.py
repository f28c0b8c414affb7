"""Building the messages a proxy sends of its own: responses, hop-by-hop ACK and CANCEL.

RFC 3261 8.2.6 (responses), 17.1.1.3 (ACK for a non-2xx final) and 9.1 (CANCEL) say exactly
which header fields are copied; these functions do that and nothing else.
"""

from __future__ import annotations

import zlib

from sipdispatch.sip.message import Headers, Request, Response

__all__ = ["REASONS", "build_ack", "build_cancel", "build_response", "to_tag_for"]

REASONS = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
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
}
_COPIED = ("via", "from", "to", "call-id", "cseq")


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
