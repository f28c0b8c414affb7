"""The sans-I/O SIP proxy: datagrams in, datagrams and events out (RFC 3261 section 16).

``Proxy.receive(data, source, listener, now)`` returns an ``Outbox``: the ``Send`` values to put
on the wire and the events to report. ``next_deadline()`` and ``on_timer(now)`` drive
retransmissions and timeouts. No socket, clock or asyncio here (the aioquic shape), so every
path is testable with bytes and a hand-moved ``now``.

This module only sorts what comes in; the components do the work. New out-of-dialog requests go
to ``Forwarder`` (stateful, with failover and CANCEL). In-dialog requests (ACK for 2xx, BYE,
re-INVITE) are routed by ``Dialogs`` from the signed Record-Route they carry and forwarded
statelessly, so any replica can route them; their responses go back by Via. ``Probing`` sends
OPTIONS to destinations, and ``Deadlines`` says when each of them must act next. Before any
of that, a request over its source's rate is refused by ``SourceLimiter`` (``admission``)
unparsed; the cap on live transactions is the forwarder's.
"""

from __future__ import annotations

from typing import Final

from sipdispatch.proxy.core.admission import TRANSACTIONS, SourceLimiter
from sipdispatch.proxy.core.deadlines import Deadlines
from sipdispatch.proxy.core.dialogs import Dialogs, Signer, from_tag
from sipdispatch.proxy.core.forwarding import Forwarder
from sipdispatch.proxy.core.outbox import BRANCH_PREFIX, Outbox, stream_fallback
from sipdispatch.proxy.core.policy import PolicyRefusalError, loop_tag
from sipdispatch.proxy.core.probing import Probe, Probing
from sipdispatch.proxy.core.records import Address, CoreSettings, Hop, Listener, Selector
from sipdispatch.proxy.core.transaction import Branch, ProxyTransaction
from sipdispatch.proxy.events import AliasOffered
from sipdispatch.sip import codec, grammar, validation, values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.limits import LimitExceededError, salvage
from sipdispatch.sip.message import Request, Response, header_key
from sipdispatch.sip.uri import SipUri, format_host, parse_uri

__all__ = ["Proxy"]

_AFTER_PREFIX: Final = len(BRANCH_PREFIX)
_NOT_OURS: Final = RemoteProtocolError("response to a branch the proxy never sent")
#: what marks a request as in-dialog before it is parsed: the signature of our own Route
#: (looked for with ``find``: ``bytes in bytes`` first tries the operand as an integer and
#: builds a TypeError it then drops, which cost more than the search itself)
_DIALOG_MARK: Final = b";sig="
#: what every transaction branch of this proxy starts with: a request holding none never looped
_OUR_BRANCH: Final = BRANCH_PREFIX + "T"
_LOOP_MARK: Final = _OUR_BRANCH.encode()


def _control_characters() -> PolicyRefusalError:
    return PolicyRefusalError(
        "control-character",
        "control character in the header section",
        400,
        "Control Character In Header",
    )


class Proxy:
    """The whole proxy behaviour over bytes, with state only where a feature needs it."""

    def __init__(self, settings: CoreSettings, select: Selector, signer: Signer) -> None:
        self._deadlines = Deadlines()
        self._forwarder = Forwarder(settings, select, signer, self._deadlines)
        self._dialogs = Dialogs(settings, signer)
        self._probing = Probing(settings, self._deadlines)
        self._settings = settings
        self._limiter = _limiter(settings)

    @property
    def settings(self) -> CoreSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: CoreSettings) -> None:
        """New settings apply from the next message on (a reload changes failover, say)."""
        if settings.admission != self._settings.admission:
            self._limiter = _limiter(settings)
        self._settings = settings
        self._forwarder.settings = self._dialogs.settings = self._probing.settings = settings

    # ------------------------------------------------------------------ public surface

    def receive(self, data: bytes, source: Address, arrival: Listener | str, now: float) -> Outbox:
        """Handle one datagram (or one framed stream message) from ``source`` that arrived
        on listener ``arrival`` (a transport name: that transport's first listener)."""
        out = Outbox()
        if codec.is_keepalive(data):
            return out
        settings = self._settings
        listener = settings.sockets.first(arrival) if isinstance(arrival, str) else arrival
        limiter = self._limiter
        if limiter is not None and not data.startswith(b"SIP/"):
            refused = limiter.admit(source[0], data.find(_DIALOG_MARK) >= 0, now)
            if refused:
                self._over_rate(data, source, listener, out)
                return out
        try:
            message = codec.parse(
                data,
                datagram=listener.transport == "udp",
                limits=settings.limits,
                controls=settings.policy.controls,
            )
        except codec.ControlCharacterError as tainted:
            self._tainted(tainted.request, source, listener, out)
            return out
        except codec.MessageError as partial_error:
            out.reject(partial_error.partial, partial_error, source, listener)
            return out
        except LimitExceededError as over:  # answered without a full parse
            out.reject(salvage(data), over, source, listener)
            return out
        except RemoteProtocolError as parse_error:  # (distinct names: mypyc types each one)
            out.rejected(None, parse_error, source)
            return out
        try:
            if isinstance(message, Request):
                self._on_request(message, data, source, listener, now, out)
            else:
                self._on_response(message, source, listener, now, out)
        except RemoteProtocolError as late_error:
            # A field read only on the way (an in-dialog request's Route, a relayed response's
            # Via) can still be malformed: the message is answered or dropped like any other.
            out.reject(message, late_error, source, listener)
        return out

    def _over_rate(self, data: bytes, source: Address, listener: Listener, out: Outbox) -> None:
        """A request refused by its source's rate: dropped (UDP by default: an answer to a
        spoofed source would make the proxy a reflector), else a 503 from its salvaged
        fields, without a full parse."""
        admission = self._settings.admission
        if listener.transport == "udp" and not admission.reply_udp:
            return
        partial = salvage(data)
        if partial is None or partial.method == "ACK" or partial.headers.get("via") is None:
            return
        retry = [("Retry-After", str(admission.retry_after))]
        out.respond(partial, 503, source, listener, extra=retry)

    def admission_counts(self) -> dict[str, int]:
        """Requests refused by admission control so far, by reason."""
        counts = dict(self._limiter.counts) if self._limiter is not None else {}
        counts[TRANSACTIONS] = self._forwarder.refused
        return counts

    def next_deadline(self) -> float | None:
        """When ``on_timer`` should be called next, or None when nothing is pending."""
        deadline = self._deadlines.next_deadline()
        until = self._forwarder.recent.next_expiry()
        if until is not None:
            deadline = until if deadline is None else min(deadline, until)
        return deadline

    def on_timer(self, now: float) -> Outbox:
        out = Outbox()
        forwarder = self._forwarder
        forwarder.recent.prune(now)
        while (target := self._deadlines.pop_due(now)) is not None:
            if isinstance(target, Branch):
                forwarder.branch_timer(target, now, out)
            elif isinstance(target, ProxyTransaction):
                forwarder.server_timer(target, now, out)
            elif isinstance(target, Probe):
                self._probing.on_timer(target, now, out)
        return out

    @property
    def destinations(self) -> frozenset[str]:
        """The gateways signed routes may lead to (``dialogs.destination_id`` of each)."""
        return self._dialogs.destinations

    @destinations.setter
    def destinations(self, ids: frozenset[str]) -> None:
        """Set by the table's owner with every table it serves."""
        self._dialogs.destinations = ids

    @property
    def sockets(self) -> dict[str, str]:
        """The listener id each gateway pinned with ``socket=`` is reached from, by
        ``dialogs.destination_id``: in-dialog requests towards it leave from there too."""
        return self._dialogs.sockets

    @sockets.setter
    def sockets(self, pinned: dict[str, str]) -> None:
        self._dialogs.sockets = pinned

    @property
    def transaction_count(self) -> int:
        return len(self._forwarder.transactions)

    @property
    def branch_count(self) -> int:
        return len(self._forwarder.branches)

    @property
    def remembered_count(self) -> int:
        """Finished transactions still answering retransmissions (flat records)."""
        return len(self._forwarder.recent)

    @property
    def probe_count(self) -> int:
        return len(self._probing)

    def probe(self, hop: Hop, from_uri: str, timeout: float, now: float) -> tuple[str, Outbox]:
        """Send an OPTIONS to ``hop``; its outcome comes later as a ``ProbeCompleted`` event.

        Returns the probe id and what to send. A hop whose transport has no listener
        completes at once with a 503, so the prober sees it as down.
        """
        out = Outbox()
        probe_id = self._probing.start(hop, from_uri, timeout, now, out)
        return probe_id, out

    def transport_failed(self, address: Address, transport: str, now: float) -> Outbox:
        """A connection to ``address`` failed or broke: its branches fail over at once."""
        out = Outbox()
        self._forwarder.transport_failed(address, transport, now, out)
        self._probing.transport_failed(address, transport, out)
        return out

    # ------------------------------------------------------------------ requests

    def _on_request(  # noqa: PLR0917 - the message, its bytes, its origin, the time, the outbox
        self,
        request: Request,
        data: bytes,
        source: Address,
        listener: Listener,
        now: float,
        out: Outbox,
    ) -> None:
        policy = self._settings.policy
        if policy.active and (refusal := policy.refused_agent(request)) is not None:
            self._refused(request, refusal, source, listener, out)  # before any validation
            return
        try:
            top = validation.validate_request(request)
        except RemoteProtocolError as exc:
            out.reject(request, exc, source, listener)
            return
        if policy.active and (refusal := policy.refused_method(request)) is not None:
            self._refused(request, refusal, source, listener, out)
            return
        # The top Via is read once, here: its parsed form gives the key, the stamped text is
        # what goes downstream and what our branch signatures cover.
        via = _stamped(top, request.headers.first_value("via"), source)
        request.headers.replace_first("via", via)
        if self._settings.source_header is not None:
            _tag_source(request, self._settings.source_header, listener.transport, source)
        key = _server_key(request, top)
        upstream = (listener, source)
        if listener.transport != "udp" and "alias" in top.params:
            _offer_alias(top, upstream, out)
        forwarder = self._forwarder
        method = request.method
        if method == "ACK":
            if not forwarder.on_ack(key, now):
                route = request.headers.first_value("route")
                if route is not None:
                    self._dialogs.route(request, route, via, upstream, out, now=now)
                # An ACK nobody can route is dropped: it cannot be answered.
            return
        if method == "CANCEL":
            forwarder.on_cancel(request, key, upstream, now, out)
            return
        if forwarder.retransmission(key, out) or self._refuse(request, data, source, listener, out):
            return
        route = request.headers.first_value("route")
        if route is not None:
            self._dialogs.route(request, route, via, upstream, out, now=now)
        elif validation.has_to_tag(request):
            out.respond(request, 404, source, listener, reason="Not Here")
        elif self._is_for_us(request):
            out.respond(request, 200, source, listener)
        elif policy.active and (refusal := policy.refused_domain(request)) is not None:
            self._refused(request, refusal, source, listener, out)
        elif listener.transport == "udp":
            forwarder.start(request, key, via, upstream, now, out)
        else:
            fallback = stream_fallback(top, source)
            forwarder.start(request, key, via, upstream, now, out, fallback=fallback)

    def _tainted(self, request: Request, source: Address, listener: Listener, out: Outbox) -> None:
        """A request with a control character in its header section gets 400 (unless a
        scanner sent it: no answer then either)."""
        refusal = self._settings.policy.refused_agent(request) or _control_characters()
        self._refused(request, refusal, source, listener, out)

    def _refused(
        self,
        request: Request,
        refusal: PolicyRefusalError,
        source: Address,
        listener: Listener,
        out: Outbox,
    ) -> None:
        """Answer (or silently drop) a request the policy refuses, and report it."""
        out.rejected(request, refusal, source)
        if refusal.silent or request.method == "ACK" or request.headers.get("via") is None:
            return
        extra = [("Allow", self._settings.policy.allow)] if refusal.status == 405 else None
        out.respond(request, refusal.status, source, listener, reason=refusal.reason, extra=extra)

    def _refuse(
        self, request: Request, data: bytes, source: Address, listener: Listener, out: Outbox
    ) -> bool:
        """Checks of RFC 3261 16.3 that end in a response of our own (reported like errors)."""
        max_forwards = request.headers.get("max-forwards")
        extra: list[tuple[str, str]] = []
        if max_forwards is not None and grammar.number(max_forwards) == 0:
            refusal = RemoteProtocolError("Max-Forwards reached 0", 483)
        elif self._settings.policy.loops and data.find(_LOOP_MARK) >= 0 and self._looped(request):
            refusal = PolicyRefusalError("loop", "the request came back unchanged", 482)
        elif required := request.headers.values("proxy-require"):
            refusal = RemoteProtocolError(f"Proxy-Require {', '.join(required)}", 420)
            extra = [("Unsupported", ", ".join(required))]
        else:
            return False
        out.rejected(request, refusal, source)
        out.respond(request, refusal.status, source, listener, extra=extra)
        return True

    def _looped(self, request: Request) -> bool:
        """RFC 3261 16.3 item 4: one of our own Vias (our address, our branch) carries the
        loop tag this request has now. A spiral (a Request-URI or To changed on the way)
        has another tag and goes on."""
        settings = self._settings
        tag: str | None = None
        for value in request.headers.values("via"):
            if _OUR_BRANCH not in value:
                continue
            via = values.parse_via(value)
            if not settings.sockets.is_own((via.host.strip("[]"), via.port or 5060)):
                continue
            parts = (via.branch or "")[len(_OUR_BRANCH) :].split(".")
            if len(parts) != 3:
                continue  # a branch made without loop detection
            if tag is None:
                tag = loop_tag(request)
            if parts[1] == tag:
                return True
        return False

    def _is_for_us(self, request: Request) -> bool:
        """OPTIONS to the balancer itself (a health check) is answered, not dispatched."""
        if request.method != "OPTIONS":
            return False
        uri = parse_uri(request.uri)
        return isinstance(uri, SipUri) and uri.user is None and self._settings.is_local(uri)

    # ------------------------------------------------------------------ responses

    def _on_response(
        self, response: Response, source: Address, listener: Listener, now: float, out: Outbox
    ) -> None:
        try:
            top = validation.validate_response(response)
        except RemoteProtocolError as exc:
            out.rejected(None, exc, None)
            return
        branch_id = top.branch or ""
        if not branch_id.startswith(BRANCH_PREFIX) or len(branch_id) == _AFTER_PREFIX:
            # Not a Via of ours (RFC 4475 bcast, a bare "z9hG4bKsd"): dropped, and counted.
            out.rejected(response, _NOT_OURS, None)
            return
        sender = branch_id[_AFTER_PREFIX]
        if sender == "P":
            self._probing.on_response(branch_id, response, source, listener.transport, now, out)
        elif sender == "S":
            self._dialogs.relay(response, branch_id, out)
        elif sender == "T":
            cseq_method = (response.headers.get("cseq") or "").split()[-1]
            branch = self._forwarder.branches.get(branch_id)
            if branch is not None:
                if cseq_method != "CANCEL":  # the 200 to our CANCEL ends there
                    self._forwarder.on_response(branch, response, now, out)
            elif cseq_method == "INVITE" and 200 <= response.status < 300:
                # A 2xx retransmission that outlived its branch (RFC 3261 16.7 step 10).
                self._dialogs.relay(response, branch_id, out)


def _limiter(settings: CoreSettings) -> SourceLimiter | None:
    """The per-source limiter, or None when neither rate is on (no cost per message then)."""
    admission = settings.admission
    return SourceLimiter(admission) if admission.limits_sources else None


def _stamped(top: values.Via, written: str | None, source: Address) -> str:
    """The top Via (parsed: ``top``, as written: ``written``) with where the request really
    came from (RFC 3261 18.2.1 received, RFC 3581 rport).

    rport is always filled, as Kamailio's force_rport does: responses then go back to the
    source address and port, which is what NAT and TCP connections need.
    """
    host, port = source
    received = "" if top.host.strip("[]") == host else f";received={host}"
    params = top.params
    if (
        written is not None
        and "rport" not in params
        and "received" not in params
        and written.count(";") == len(params)  # no name twice, no ";" inside a quoted value
    ):
        # The common case: only the two parameters to add, after the Via as it was written.
        return f"{written}{received};rport={port}"
    parts = [f"SIP/2.0/{top.transport} {format_host(top.host, top.port)}"]
    for name, value in params.items():
        if name not in ("received", "rport"):
            parts.append(f";{name}={value}" if value else f";{name}")
    parts.append(f"{received};rport={port}")
    return "".join(parts)


def _offer_alias(top: values.Via, upstream: tuple[Listener, Address], out: Outbox) -> None:
    """RFC 5923: the connection may carry requests to the Via's sent-by too. Only for a
    sent-by on the connection's own host: an alias naming another host would let anyone take
    over what is meant for it (RFC 5923 asks TLS and its certificate to prove that)."""
    listener, source = upstream
    if top.host.strip("[]") == source[0]:
        out.report(AliasOffered(listener.transport, source, stream_fallback(top, source)))


def _tag_source(request: Request, name: str, transport: str, source: Address) -> None:
    """Say where the request came from in header ``name``, so that a gateway behind the proxy
    can tell callers apart; a copy sent by anyone else is removed first, never trusted."""
    headers = request.headers
    headers.remove_all(header_key(name))
    headers.append(name, f"{transport}:{format_host(source[0], source[1])}")


def _server_key(request: Request, top: values.Via) -> str:
    """Transaction key (RFC 3261 17.2.3); RFC 2543 requests fall back to dialog identifiers."""
    method = "INVITE" if request.method in ("ACK", "CANCEL") else request.method
    sent_by = format_host(top.host, top.port)
    branch = top.branch
    if branch is not None and branch.startswith(values.MAGIC_COOKIE):
        return f"{branch}|{sent_by}|{method}"
    from_tag_value = from_tag(request.headers.get("from"))
    cseq = (request.headers.get("cseq") or "").split()[0]
    return f"2543|{request.call_id}|{from_tag_value}|{cseq}|{sent_by}|{method}"
