"""Dialog routing through the proxy's own signatures (DESIGN.md 3.5): the stateless half.

Two things come back to the proxy in messages it did not keep state for, and both are signed
with a keyed MAC (``Signer``) whose secret every replica of a deployment shares:

* its Record-Route, in the Route of every in-dialog request. When it forwards a dialog-creating
  request the proxy Record-Routes with the advertised address and three parameters: ``ftag``
  (the caller's From tag, which tells the two directions apart), ``did`` (the gateway the branch
  went to) and ``sig`` (a MAC over them and the Call-ID). Any replica can then route the
  dialog's later requests from the Route alone: caller to gateway always goes to the signed
  gateway, and only that gateway may send requests the other way. Nothing else is followed, so
  the proxy is never an open relay.
* the Via branch of statelessly forwarded requests: the signature covers the Via below ours, so
  a response is relayed only to the hop that really sent the request (RFC 4475 bcast).

The MAC is BLAKE2b in its keyed mode (RFC 7693), a MAC by design and one call per signature,
which matters at two signatures per in-dialog request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sipdispatch.proxy.core.outbox import BRANCH_PREFIX, Outbox, count_hop, via_value
from sipdispatch.proxy.core.records import Address, CoreSettings, Hop, Send
from sipdispatch.proxy.events import DialogEnded
from sipdispatch.sip import grammar, values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.uri import SipUri, format_host, parse_uri

__all__ = ["Dialogs", "Signer", "from_tag", "record_route", "route_target"]

#: where an in-dialog request goes next: its transport and address (not a table destination)
NextHop = tuple[str, Address]

_SIGNATURE_BYTES = 10  # 80 bits: forging one takes 2**79 tries on average


class Signer:
    """Makes and checks short hex signatures with one shared secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes | None = None) -> None:
        # A random secret works for one standalone process; replicas must share theirs.
        key = secret if secret else secrets.token_bytes(32)
        # BLAKE2b takes keys of up to 64 bytes; longer secrets are hashed down first.
        self._key = key if len(key) <= 64 else hashlib.sha256(key).digest()

    def sign(self, *parts: str) -> str:
        data = "\x00".join(parts).encode("utf-8", "surrogateescape")
        return hashlib.blake2b(data, key=self._key, digest_size=_SIGNATURE_BYTES).hexdigest()

    def verify(self, signature: str, *parts: str) -> bool:
        return hmac.compare_digest(signature, self.sign(*parts))


class Dialogs:
    """Forwards in-dialog requests by their Route, and relays responses by their Via."""

    def __init__(self, settings: CoreSettings, signer: Signer) -> None:
        self.settings = settings
        self.signer = signer

    def route(
        self,
        request: Request,
        route: str,
        via: str,
        upstream: tuple[str, Address],
        out: Outbox,
    ) -> None:
        """Loose routing (RFC 3261 16.4, 16.12) through our own signed Record-Route.

        ``via`` is the request's top Via as it will be forwarded (received and rport filled in),
        ``upstream`` the transport and address it came from.
        """
        transport, source = upstream
        try:
            next_transport, address = self._target(request, route, source)
        except RemoteProtocolError as exc:
            if request.method != "ACK":
                out.respond(request, exc.status, source, transport, reason=exc.reason)
            out.rejected(request, exc, source)
            return
        local = self.settings.local.get(next_transport)
        if local is None:
            out.respond(request, 503, source, transport, reason="No Transport")
            return
        headers = request.headers
        headers.pop_first("route")
        count_hop(request, self.settings.policy.max_forwards)
        branch = f"{BRANCH_PREFIX}S{self.signer.sign('via', via)}"
        headers.push_first("Via", via_value(next_transport, local, branch))
        out.sends.append(Send(next_transport, address, request.to_bytes()))
        if request.method == "BYE":
            out.report(DialogEnded(request.call_id))

    def _target(self, request: Request, route: str, source: Address) -> NextHop:
        uri = values.parse_name_addr(route).uri
        if not isinstance(uri, SipUri) or not self.settings.is_local(uri):
            raise RemoteProtocolError("Route does not point at this proxy", 403, "Forbidden")
        return route_target(request, uri, source, self.signer)

    def relay(self, response: Response, branch_id: str, out: Outbox) -> None:
        """Relay a response by the Via below ours, if our signature in ``branch_id`` covers it:
        responses to in-dialog requests, and 2xx retransmissions that outlive the INVITE
        transaction (RFC 3261 16.7 step 10)."""
        headers = response.headers
        headers.pop_first("via")
        previous = headers.first_value("via")
        if previous is None:
            return
        signature = branch_id[len(BRANCH_PREFIX) + 1 :].rpartition(".")[2]
        if not self.signer.verify(signature, "via", previous):
            return  # a Via we did not write: never reflect it anywhere
        via = values.parse_via(previous)
        host = via.params.get("received") or via.host.strip("[]")
        rport = via.params.get("rport")
        port = int(rport) if rport and grammar.is_digits(rport) else (via.port or 5060)
        out.sends.append(Send(via.transport.lower(), (host, port), response.to_bytes()))


def from_tag(value: str | None) -> str | None:
    """The tag parameter of a From or To value, without parsing the whole name-addr."""
    match = grammar.TAG_PARAM.search(value or "")
    return (match.group(1) or None) if match else None


def record_route(
    request: Request, hop: Hop, advertise: Address, caller_transport: str, signer: Signer
) -> str:
    """The Record-Route value for ``request`` forwarded to ``hop``."""
    ftag = from_tag(request.headers.get("from")) or ""
    did = f"{format_host(hop.host, None)}~{hop.port}~{hop.transport}"
    sig = signer.sign(request.call_id, ftag, did)
    transport = ";transport=tcp" if caller_transport == "tcp" else ""
    return f"<sip:{format_host(*advertise)}{transport};lr;ftag={ftag};did={did};sig={sig}>"


def route_target(request: Request, route: SipUri, source: Address, signer: Signer) -> NextHop:
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
    _, (gateway_host, _) = gateway
    if source[0] != gateway_host:
        raise RemoteProtocolError("request against the dialog direction", 403, "Forbidden")
    remaining = request.headers.values("route")[1:]
    next_uri = parse_uri(
        values.parse_name_addr(remaining[0]).uri_text if remaining else request.uri
    )
    if not isinstance(next_uri, SipUri):
        raise RemoteProtocolError("next hop is not a SIP URI", 416, "Unsupported URI Scheme")
    host = next_uri.param("maddr") or next_uri.host_address
    return next_uri.transport, (host, next_uri.default_port())


def _parse_did(did: str) -> NextHop:
    host, _, rest = did.partition("~")
    port, _, transport = rest.partition("~")
    if not grammar.is_digits(port) or transport not in ("udp", "tcp", "tls"):
        raise RemoteProtocolError("Route carries a malformed destination", 403, "Forbidden")
    return transport, (host.strip("[]"), int(port))
