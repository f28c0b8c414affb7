"""Semantic checks a proxy makes before it acts on a message (RFC 3261 16.3, RFC 4475).

Framing (``codec``) only proves a message can be cut out of the bytes; these checks prove it is
one the proxy can route and answer. Each failure raises ``RemoteProtocolError`` with the status
the RFCs name: 400 for malformed fields, 416 for Request-URI schemes we cannot route, 505 for
other SIP versions. Responses that fail are dropped by the caller, never answered.
"""

from __future__ import annotations

from typing import Final

from sipdispatch.sip import grammar, values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.uri import parse_uri

__all__ = ["ROUTABLE_SCHEMES", "has_to_tag", "validate_request", "validate_response"]

#: Request-URI schemes this proxy forwards; anything else gets 416 (RFC 4475 unkscm, novelsc)
ROUTABLE_SCHEMES: Final = frozenset({"sip", "sips", "tel"})
_MANDATORY: Final[tuple[str, ...]] = ("via", "from", "to", "call-id", "cseq")
_SINGLETONS: Final[tuple[str, ...]] = (
    "call-id",
    "from",
    "to",
    "cseq",
    "max-forwards",
    "content-type",
)
_MAX_UINT32: Final = 2**32 - 1


def has_to_tag(request: Request) -> bool:
    """Whether the request is inside a dialog (its To header carries a tag)."""
    to = request.headers.get("to") or ""
    return ";tag=" in to or grammar.TAG_PARAM.search(to) is not None


def _check_headers(message: Request | Response) -> values.Via:
    """The checks requests and responses share: mandatory headers present, singletons single;
    returns the parsed top Via."""
    headers = message.headers
    absent = headers.missing(_MANDATORY)
    if absent is not None:
        raise RemoteProtocolError(f"missing {absent} header")
    twice = headers.repeated_of(_SINGLETONS)
    if twice is not None:
        raise RemoteProtocolError(f"{twice} appears {len(headers.get_all(twice))} times")
    return values.parse_via(headers.first_value("via") or "")


def _check_uint32(text: str, what: str, upper: int = _MAX_UINT32) -> int:
    stripped = text.strip(grammar.WSP)
    if not grammar.is_digits(stripped) or len(stripped) > 10:
        raise RemoteProtocolError(f"{what} out of range: {text!r}")
    value = grammar.number(stripped)
    if value > upper:
        raise RemoteProtocolError(f"{what} out of range: {text!r}")
    return value


def validate_request(request: Request) -> values.Via:
    """Raise ``RemoteProtocolError`` unless the request is well formed enough to proxy.

    Returns the parsed top Via. Requests inside a dialog (To tag) get the checks their routing
    needs; new requests, which the proxy answers and dispatches, get all of them. Only the top
    Via is read: the others are the previous hops' business.
    """
    if request.version != "SIP/2.0":
        raise RemoteProtocolError(
            f"unsupported version {request.version}", 505, "Version Not Supported"
        )
    top = _check_headers(request)
    headers = request.headers
    if top.branch == values.MAGIC_COOKIE:
        # The bare cookie cannot identify a transaction (RFC 4475 badbranch).
        raise RemoteProtocolError("Via branch is only the magic cookie")
    cseq = values.parse_cseq(headers.get("cseq") or "")
    if cseq.method != request.method:
        raise RemoteProtocolError(f"CSeq method {cseq.method} != request method {request.method}")
    max_forwards = headers.get("max-forwards")
    if max_forwards is not None:
        _check_uint32(max_forwards, "Max-Forwards", 255)
    if has_to_tag(request):
        return top
    for value in headers.values("via")[1:]:
        values.parse_via(value)
    values.parse_name_addr(headers.get("from") or "")
    values.parse_name_addr(headers.get("to") or "")
    expires = headers.get("expires")
    if expires is not None:
        _check_uint32(expires, "Expires")
    for contact in headers.values("contact"):
        if contact == "*":
            continue
        param = values.parse_name_addr(contact).params.get("expires")
        if param is not None:
            _check_uint32(param, "Contact expires")
    for key in ("route", "record-route"):
        for value in headers.values(key):
            values.parse_name_addr(value)
    _check_request_uri(request.uri)
    return top


def _check_request_uri(text: str) -> None:
    scheme = text.partition(":")[0].lower()
    parse_uri(text, allow_headers=False)
    if scheme not in ROUTABLE_SCHEMES:
        raise RemoteProtocolError(
            f"Request-URI scheme {scheme!r} is not supported", 416, "Unsupported URI Scheme"
        )


def validate_response(response: Response) -> values.Via:
    """Raise ``RemoteProtocolError`` unless the response can be matched and relayed; returns
    the parsed top Via."""
    if response.version != "SIP/2.0" or response.status > 699:
        raise RemoteProtocolError(f"bad status line {response.version} {response.status}")
    top = _check_headers(response)
    values.parse_cseq(response.headers.get("cseq") or "")
    return top
