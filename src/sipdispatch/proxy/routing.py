"""Dialog routing through the proxy's own signed Record-Route (DESIGN.md 3.5).

When it forwards a dialog-creating request the proxy Record-Routes with the advertised address
and three parameters: ``ftag`` (the caller's From tag, which tells the two directions apart),
``did`` (the gateway the branch went to) and ``sig`` (a MAC over them and the Call-ID). Any
replica sharing the secret can then route the dialog's later requests from the Route alone:
caller to gateway always goes to the signed gateway, and only that gateway may send requests
the other way. Nothing else is followed, so the proxy is never an open relay.
"""

from __future__ import annotations

import re

from sipdispatch.proxy.signing import Signer
from sipdispatch.proxy.state import Address, Hop
from sipdispatch.sip import values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request
from sipdispatch.sip.uri import SipUri, format_host, parse_uri

__all__ = ["from_tag", "record_route", "route_target"]

_TAG = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;,\s]+)", re.I)


def from_tag(value: str | None) -> str | None:
    """The tag parameter of a From or To value, without parsing the whole name-addr."""
    match = _TAG.search(value or "")
    return match.group(1) if match else None


def record_route(
    request: Request, hop: Hop, advertise: Address, caller_transport: str, signer: Signer
) -> str:
    """The Record-Route value for ``request`` forwarded to ``hop``."""
    ftag = from_tag(request.headers.get("from")) or ""
    did = f"{format_host(hop.host, None)}~{hop.port}~{hop.transport}"
    sig = signer.sign(request.call_id, ftag, did)
    transport = ";transport=tcp" if caller_transport == "tcp" else ""
    return f"<sip:{format_host(*advertise)}{transport};lr;ftag={ftag};did={did};sig={sig}>"


def route_target(request: Request, route: SipUri, source: Address, signer: Signer) -> Hop:
    """Where an in-dialog request carrying our Route ``route`` goes; raises a 403 error for
    anything not signed by us or sent against the dialog's direction."""
    ftag, did, sig = route.param("ftag"), route.param("did"), route.param("sig")
    if ftag is None or did is None or sig is None:
        raise RemoteProtocolError("Route carries no dialog signature", 403, "Forbidden")
    if not signer.verify(sig, request.call_id, ftag, did):
        raise RemoteProtocolError("Route signature does not match", 403, "Forbidden")
    gateway = _parse_did(did)
    if from_tag(request.headers.get("from")) == ftag:
        return gateway  # caller to gateway: always the box that answered the dialog
    # Gateway to caller: only the gateway may send this way, to where the request says.
    if source[0] != gateway.host:
        raise RemoteProtocolError("request against the dialog direction", 403, "Forbidden")
    remaining = request.headers.values("route")[1:]
    next_uri = parse_uri(
        values.parse_name_addr(remaining[0]).uri_text if remaining else request.uri
    )
    if not isinstance(next_uri, SipUri):
        raise RemoteProtocolError("next hop is not a SIP URI", 416, "Unsupported URI Scheme")
    host = next_uri.param("maddr") or next_uri.host_address
    return Hop(host, next_uri.default_port(), next_uri.transport, key=str(next_uri))


def _parse_did(did: str) -> Hop:
    host, _, rest = did.partition("~")
    port, _, transport = rest.partition("~")
    if not port.isdigit() or transport not in ("udp", "tcp", "tls"):
        raise RemoteProtocolError("Route carries a malformed destination", 403, "Forbidden")
    return Hop(host.strip("[]"), int(port), transport, key=did)
