"""Dialog routing through the proxy's own signatures (DESIGN.md 3.5): the stateless half.

Two things come back to the proxy in messages it did not keep state for, and both are signed
with a keyed MAC (``Signer``) whose secret every replica of a deployment shares:

* its Record-Route, in the Route of every in-dialog request. When it forwards a dialog-creating
  request the proxy Record-Routes with the advertised address of the listener it leaves from
  (and, when the request changes listener, a second route for the one it came in on: RFC 5658;
  both signed alike, both popped together) and four parameters: ``ftag``
  (the caller's From tag, which tells the two directions apart), ``did`` (the gateway the branch
  went to), ``exp`` (when the route stops being honoured, Unix seconds: the dialog lifetime
  after it was made) and ``sig`` (a MAC over them and the Call-ID). Any replica can then route
  the dialog's later requests from the Route alone: caller to gateway always goes to the signed
  gateway, and only that gateway (its address, over its transport) may send requests the other
  way. A caller that came over a stream (TCP) has its flow recorded too, ``flow`` (its
  transport and source address, signed with the rest): requests the gateway sends the
  caller's way go over that connection while it lives, as RFC 5626/5923 would have them, so a
  caller behind NAT gets its BYE; once it is gone they go where the request says, as before. A
  route is honoured only while it has not expired and its gateway is still in the table
  (in any state: a draining gateway still takes in-dialog requests), so a route captured once
  cannot reach a gateway that left, or whatever later took its address. Nothing else is
  followed, so the proxy is never an open relay. Refusals say why (`RouteRefusedError`): 403 for
  a route that is not ours, or no longer, 404 for a gateway that left the table.
* the Via branch of statelessly forwarded requests: the signature covers the Via below ours, so
  a response is relayed only to the hop that really sent the request (RFC 4475 bcast).

The MAC is BLAKE2b in its keyed mode (RFC 7693), a MAC by design and one call per signature,
which matters at two signatures per in-dialog request. ``Signer`` holds a list of keys: it signs
with the first and accepts any, so a key is rotated without dropping a call (add the new key
second on every replica, make it first, remove the old one once the dialogs it signed ended).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from sipdispatch.proxy.core.outbox import (
    BRANCH_PREFIX,
    Outbox,
    count_hop,
    stream_fallback,
    via_value,
)
from sipdispatch.proxy.core.records import (
    Address,
    CoreSettings,
    Hop,
    Listener,
    Send,
    family_of,
)
from sipdispatch.proxy.events import DialogEnded, RouteRefused
from sipdispatch.sip import grammar, values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.memo import remember
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.uri import SipUri, format_host, parse_uri

__all__ = [
    "REFUSALS",
    "Dialogs",
    "RouteRefusedError",
    "Signer",
    "destination_id",
    "from_tag",
    "record_routes",
    "route_target",
]

#: where an in-dialog request goes next: its transport and address (not a table destination)
NextHop = tuple[str, Address]
#: a `NextHop` and, over a stream, where to send instead when no connection to it is open
RoutedHop = tuple[str, Address, Address | None]

_SIGNATURE_BYTES: Final = 10  # 80 bits: forging one takes 2**79 tries on average


#: signatures a signer made or checked lately, kept to skip checking them again: the ACK and
#: the BYE of a dialog carry the Route signed for its INVITE, the responses to a relayed
#: request the branch signed for it (about 4 a call; emptied when full)
_KNOWN_SIGNATURES: Final = 8192


class Signer:
    """Makes short hex signatures with the first of its keys, and accepts those of any."""

    __slots__ = ("_keys", "_known", "_macs")

    def __init__(self, *keys: bytes) -> None:
        self._keys: tuple[bytes, ...] = ()
        # One keyed hash per key, copied for each signature: keying BLAKE2b costs a compression
        # of its own, which a copy skips (about a third of a signature's CPU).
        self._macs: tuple[hashlib.blake2b, ...] = ()
        self._known: dict[str, str] = {}
        self.use(*keys)

    def use(self, *keys: bytes) -> None:
        """Sign with ``keys[0]`` from now on and accept any of ``keys`` (a rotation step).

        No key at all: a random one, which works for one standalone process only; replicas must
        share theirs.
        """
        usable = keys or (secrets.token_bytes(32),)
        # BLAKE2b takes keys of up to 64 bytes; longer secrets are hashed down first.
        self._keys = tuple(k if len(k) <= 64 else hashlib.sha256(k).digest() for k in usable)
        self._macs = tuple(
            hashlib.blake2b(key=key, digest_size=_SIGNATURE_BYTES) for key in self._keys
        )
        self._known = {}  # what the keys before vouched for, these may not

    def sign(self, *parts: str) -> str:
        data = "\x00".join(parts)
        signature = _mac(self._macs[0], data.encode("utf-8", "surrogateescape"))
        self._remember(data, signature)
        return signature

    def verify(self, signature: str, *parts: str) -> bool:
        data = "\x00".join(parts)
        known = self._known.get(data)
        if known is not None and hmac.compare_digest(signature, known):
            return True
        encoded = data.encode("utf-8", "surrogateescape")
        # The signing key first: outside a rotation, the only one. (A loop: any() would
        # allocate a generator per request.)
        for keyed in self._macs:
            if hmac.compare_digest(signature, _mac(keyed, encoded)):
                self._remember(data, signature)
                return True
        return False

    def _remember(self, data: str, signature: str) -> None:
        known = self._known
        if len(known) >= _KNOWN_SIGNATURES:
            known.clear()
        known[data] = signature


def _mac(keyed: hashlib.blake2b, data: bytes) -> str:
    """BLAKE2b of ``data`` under the key ``keyed`` was made with (a keyed hash, unused)."""
    mac = keyed.copy()
    mac.update(data)
    return mac.hexdigest()


#: why a Route was refused (the ``reason`` label of the refusal counter), with the status
REFUSALS: Final = {
    "foreign": 403,  # the Route names another host
    "unsigned": 403,  # no dialog signature, or a malformed one (routes of an older format too)
    "signature": 403,  # signed with no key this proxy holds
    "expired": 403,  # older than the dialog lifetime
    "direction": 403,  # towards the caller, but not from the dialog's gateway
    "gone": 404,  # the dialog's gateway is no longer in the table
}


class RouteRefusedError(Exception):
    """An in-dialog request the proxy will not route; ``reason`` is a key of `REFUSALS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = REFUSALS[reason]


class Dialogs:
    """Forwards in-dialog requests by their Route, and relays responses by their Via."""

    def __init__(self, settings: CoreSettings, signer: Signer) -> None:
        self.settings = settings
        self.signer = signer
        #: `destination_id` of every gateway in the table being served: the only ones a
        #: signed route may still lead to (the owner of the table keeps it current)
        self.destinations: frozenset[str] = frozenset()
        #: the listener (``socket=``) of each of those gateways that is pinned to one
        self.sockets: dict[str, str] = {}

    def route(
        self,
        request: Request,
        route: str,
        via: str,
        upstream: tuple[Listener, Address],
        out: Outbox,
        *,
        now: float,
    ) -> None:
        """Loose routing (RFC 3261 16.4, 16.12) through our own signed Record-Route.

        ``route`` is the top Route, ``via`` the request's top Via as it will be forwarded
        (received and rport filled in), ``upstream`` the listener it arrived on and its source.
        Every Route of ours at the top goes: one, or two where the dialog was bridged between
        listeners (RFC 5658); the last of them names the listener that faces the next hop.
        """
        arrival, source = upstream
        try:
            ours, facing, did, (next_transport, address, fallback) = self._target(
                request, route, upstream, now
            )
        except RouteRefusedError as refusal:
            out.report(RouteRefused(refusal.reason))
            exc = RemoteProtocolError(str(refusal), refusal.status)
            if request.method != "ACK":
                out.respond(request, exc.status, source, arrival)
            out.rejected(request, exc, source)
            return
        except RemoteProtocolError as exc:
            if request.method != "ACK":
                out.respond(request, exc.status, source, arrival, reason=exc.reason)
            out.rejected(request, exc, source)
            return
        listener = self._leaving(facing, did, next_transport, address, arrival)
        if listener is None:
            out.respond(request, 503, source, arrival, reason="No Transport")
            return
        headers = request.headers
        for _ in range(ours):
            headers.pop_first("route")
        count_hop(request, self.settings.policy.max_forwards)
        branch = f"{BRANCH_PREFIX}S{self.signer.sign('via', values.via_compared_form(via))}"
        headers.push_first("Via", via_value(next_transport, listener.local, branch))
        data = request.to_bytes()
        out.sends.append(Send(next_transport, address, data, fallback, listener))
        if request.method == "BYE":
            out.report(DialogEnded(request.call_id))

    def _target(
        self, request: Request, route: str, upstream: tuple[Listener, Address], now: float
    ) -> tuple[int, SipUri, str, RoutedHop]:
        """How many Routes at the top are ours, the last of them, the dialog's gateway
        (``did``) and where the request goes."""
        uri = values.parse_name_addr(route).uri
        settings = self.settings
        if not isinstance(uri, SipUri) or not settings.is_local(uri):
            raise RouteRefusedError("foreign", "Route does not point at this proxy")
        ours, last = 1, uri
        routes = request.headers.values("route")
        if len(routes) > 1:
            # The twin of a bridged dialog: ours too, and signed alike (the same signature)
            second = values.parse_name_addr(routes[1]).uri
            if (
                isinstance(second, SipUri)
                and settings.is_local(second)
                and _signed_fields(second.params)[4] == _signed_fields(uri.params)[4]
            ):
                ours, last = 2, second
        did, target = route_target(
            request,
            uri,
            upstream,
            self.signer,
            unix_now=now + settings.clock_offset,
            destinations=self.destinations,
            skip=ours,
        )
        return ours, last, did, target

    def _leaving(
        self, facing: SipUri, did: str, transport: str, address: Address, arrival: Listener
    ) -> Listener | None:
        """The listener an in-dialog request leaves from: the gateway's ``socket=`` towards
        the gateway; else the one our last Route names, if it fits the next hop's transport
        and family; else any that fits, the one it arrived on first."""
        sockets = self.settings.sockets
        if self.sockets and _parse_did(did)[1] == address:
            pinned = self.sockets.get(did)
            if pinned is not None:
                return sockets.by_id.get(pinned)
        family = family_of(address[0])
        named = sockets.naming(facing.transport, (facing.host_address, facing.default_port()))
        fitting = [x for x in named if x.transport == transport and family in (0, x.family)]
        if fitting:
            return arrival if arrival in fitting else fitting[0]
        return sockets.facing(transport, family, arrival)

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
        if not self.signer.verify(signature, "via", values.via_compared_form(previous)):
            return  # a Via we did not write: never reflect it anywhere
        try:
            via = values.parse_via(previous)
        except RemoteProtocolError:
            return
        host = via.params.get("received") or via.host.strip("[]")
        rport = via.params.get("rport")
        port = int(rport) if rport and grammar.is_digits(rport) else (via.port or 5060)
        transport = via.transport.lower()
        # Over a stream, rport is the connection's port; once it is gone, 18.2.2's address.
        fallback = None if transport == "udp" else stream_fallback(via, (host, port))
        # (leaves from the first listener of its transport and family: which one the request
        # came in on is not kept for a stateless forward)
        out.sends.append(Send(transport, (host, port), response.to_bytes(), fallback))


#: From and To values read for their tag already ("" for none): every request of a call
#: carries its caller's From, and each is asked for its tag twice
_TAGS: Final[dict[str, str]] = {}


def from_tag(value: str | None) -> str | None:
    """The tag parameter of a From or To value, without parsing the whole name-addr."""
    if value is None:
        return None
    tag = _TAGS.get(value)
    if tag is None:
        match = grammar.TAG_PARAM.search(value)
        tag = remember(_TAGS, value, match.group(1) if match else "")
    return tag or None


def destination_id(host: str, port: int, transport: str) -> str:
    """How a signed route names its gateway (``did``): host, port and transport."""
    return f"{format_host(host, None)}~{port}~{transport}"


def record_routes(
    request: Request,
    hop: Hop,
    inbound: Listener,
    outbound: Listener,
    signer: Signer,
    *,
    expires: int,
    flow: Address | None = None,
) -> list[str]:
    """The Record-Route values for ``request``, which arrived on ``inbound``, forwarded to
    ``hop`` from ``outbound``, honoured until ``expires`` (Unix seconds); top one first.
    ``flow``: the address a stream caller's connection comes from, to send the gateway's
    requests back over it.

    One route when both sides see the proxy alike; two when the request changes transport
    or advertised address (RFC 5658): the top one names the outbound listener (the gateway's
    side uses it), the second the inbound one (the caller's). Both carry the same signed
    dialog fields, so either side's in-dialog requests pop both.
    """
    ftag = from_tag(request.headers.get("from")) or ""
    did = destination_id(hop.host, hop.port, hop.transport)
    exp = str(expires)
    caller: str | None = None
    if flow is None:
        sig = signer.sign(request.call_id, ftag, did, exp)
        flow_param = ""
    else:
        caller = destination_id(flow[0], flow[1], inbound.transport)
        sig = signer.sign(request.call_id, ftag, did, exp, caller)
        flow_param = f";flow={caller}"
    params = f";lr;ftag={ftag};did={did};exp={exp}{flow_param};sig={sig}"
    plain = _PLAIN(ftag) and _PLAIN(did) and (caller is None or _PLAIN(caller))
    fields = (ftag, did, exp, caller, sig) if plain else None
    outer = _route_value(outbound, params, fields)
    if inbound.record_route_key == outbound.record_route_key:
        return [outer]
    return [outer, _route_value(inbound, params, fields)]


#: a parameter value the URI grammar takes as it stands (the From tag comes from the caller)
_PLAIN: Final = grammar.PARAM_VALUE.fullmatch


def _route_value(listener: Listener, params: str, fields: _SignedFields | None) -> str:
    """A Record-Route value naming ``listener``. ``fields``: the signed fields ``params``
    carries, when all are plain parameter values: the parse of the route is then recorded as
    it is made, so that the dialog's ACK and BYE, when they come back to this process, find
    their Route parsed (about a sixth of an in-dialog request's CPU)."""
    transport = "" if listener.transport == "udp" else f";transport={listener.transport}"
    hostport = format_host(*listener.advertise)
    uri_params = f"{transport}{params}"
    uri_text = f"sip:{hostport}{uri_params}"
    value = f"<{uri_text}>"
    if fields is not None:
        try:
            base = parse_uri(f"sip:{hostport}")  # one parse per listener, then its memo
        except RemoteProtocolError:
            return value
        if isinstance(base, SipUri):
            uri = SipUri("sip", None, None, base.host, base.port, params=uri_params)
            values.prime_name_addr(value, values.NameAddr(None, uri, {}, uri_text))
            remember(_SIGNED_FIELDS, uri_params, fields)
    return value


def route_target(
    request: Request,
    route: SipUri,
    upstream: tuple[Listener, Address],
    signer: Signer,
    *,
    unix_now: float,
    destinations: frozenset[str],
    skip: int = 1,
) -> tuple[str, RoutedHop]:
    """The dialog's gateway (``did``) and where an in-dialog request carrying our Route
    ``route`` (the first of ``skip`` Routes of ours) goes; raises `RouteRefusedError` for
    anything not signed by us, expired, leading to a gateway no longer in ``destinations``, or
    sent against the dialog's direction."""
    ftag, did, exp, flow, sig = _signed_fields(route.params)
    if ftag is None or did is None or exp is None or sig is None or not exp.isdigit():
        raise RouteRefusedError("unsigned", "Route carries no dialog signature")
    # A route without a flow is signed without one (callers over UDP, routes made before
    # flows were recorded); one with it, over it, so it can be neither added nor changed.
    signed = (
        signer.verify(sig, request.call_id, ftag, did, exp)
        if flow is None
        else signer.verify(sig, request.call_id, ftag, did, exp, flow)
    )
    if not signed:
        raise RouteRefusedError("signature", "Route signature does not match")
    if grammar.number(exp) < unix_now:
        raise RouteRefusedError("expired", "Route has expired (dialog lifetime)")
    if did not in destinations:
        raise RouteRefusedError("gone", "the dialog's destination is no longer in the table")
    gateway_transport, gateway_address = _parse_did(did)
    if from_tag(request.headers.get("from")) == ftag:
        # caller to gateway: always the box that answered the dialog
        return did, (gateway_transport, gateway_address, None)
    # Gateway to caller: only the gateway may send this way, to where the request says. Its
    # address and transport are checked, not its port: over TCP it is the ephemeral port of a
    # connection the gateway opened.
    arrival, source = upstream
    if source[0] != gateway_address[0] or arrival.transport != gateway_transport:
        raise RouteRefusedError("direction", "request against the dialog direction")
    remaining = request.headers.values("route")[skip:]
    next_uri = parse_uri(
        values.parse_name_addr(remaining[0]).uri_text if remaining else request.uri
    )
    if not isinstance(next_uri, SipUri):
        raise RemoteProtocolError("next hop is not a SIP URI", 416, "Unsupported URI Scheme")
    host = next_uri.param("maddr") or next_uri.host_address
    next_transport, address = next_uri.transport, (host, next_uri.default_port())
    if flow is not None:
        flow_transport, flow_address = _parse_did(flow)
        if flow_transport == next_transport:
            # The caller's own connection while it lives (behind NAT, the only way in); the
            # address the request names once it is gone.
            return did, (flow_transport, flow_address, address)
    return did, (next_transport, address, None)


_SignedFields = tuple[str | None, str | None, str | None, str | None, str | None]

#: Route parameters read already: a dialog's ACK and BYE carry the same
_SIGNED_FIELDS: Final[dict[str, _SignedFields]] = {}


def _signed_fields(params: str) -> _SignedFields:
    """``ftag``, ``did``, ``exp``, ``flow`` and ``sig`` of a Route's parameters, in one pass
    over them (``SipUri.param`` would split them once per name, on every in-dialog request)."""
    known = _SIGNED_FIELDS.get(params)
    if known is not None:
        return known
    return remember(_SIGNED_FIELDS, params, _read_signed_fields(params))


def _read_signed_fields(params: str) -> _SignedFields:
    ftag = did = exp = flow = sig = None
    for item in params.split(";"):
        key, _, value = item.partition("=")
        key = key.lower()
        if key == "ftag":
            ftag = value
        elif key == "did":
            did = value
        elif key == "exp":
            exp = value
        elif key == "flow":
            flow = value
        elif key == "sig":
            sig = value
    return ftag, did, exp, flow, sig


def _parse_did(did: str) -> NextHop:
    host, _, rest = did.partition("~")
    port, _, transport = rest.partition("~")
    if not grammar.is_digits(port) or transport not in ("udp", "tcp", "tls"):
        raise RouteRefusedError("unsigned", "Route carries a malformed destination")
    return transport, (host.strip("[]"), grammar.number(port))
