"""The sans-I/O SIP proxy: datagrams in, datagrams out (RFC 3261 section 16).

``Proxy.receive(data, source, transport, now)`` returns the ``Send`` values to put on the wire;
``next_deadline()`` and ``on_timer(now)`` drive retransmissions and timeouts. No socket, clock or
asyncio here (the aioquic shape), so every path is testable with bytes and a hand-moved ``now``.

State is kept only where a feature needs it: each new out-of-dialog request gets a
``ProxyTransaction`` (server transaction upstream, one client transaction per attempt downstream)
for retransmissions, failover and CANCEL. In-dialog requests (ACK for 2xx, BYE, re-INVITE) are
routed from the signed Record-Route they carry and forwarded statelessly, so any replica can
route them; their responses go back by Via.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re

from sipdispatch.proxy import probes, routing, wire
from sipdispatch.proxy.events import (
    BranchAnswered,
    BranchFailed,
    BranchStarted,
    CoreEvent,
    DialogEnded,
    MessageRejected,
    NoDestination,
    ProbeCompleted,
)
from sipdispatch.proxy.probes import Probe
from sipdispatch.proxy.recent import RecentAnswers
from sipdispatch.proxy.selection import RequestSelection
from sipdispatch.proxy.signing import Signer
from sipdispatch.proxy.state import (
    Address,
    Branch,
    CoreSettings,
    Hop,
    ProxyTransaction,
    Selection,
    Selector,
    Send,
)
from sipdispatch.sip import codec, validation, values
from sipdispatch.sip.errors import LocalProtocolError, RemoteProtocolError
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.transaction import (
    Action,
    ClientTransaction,
    ServerState,
    ServerTransaction,
)
from sipdispatch.sip.uri import SipUri, format_host, parse_uri

__all__ = ["Address", "CoreSettings", "Hop", "Proxy", "Selection", "Send"]

log = logging.getLogger(__name__)

_BRANCH_PREFIX = values.MAGIC_COOKIE + "sd"
_RECEIVED_RPORT = re.compile(r";[ \t]*(?:received|rport)(?:[ \t]*=[ \t]*[^;,\s]*)?", re.I)
_DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


class Proxy:
    """The whole proxy behaviour over bytes, with state only where a feature needs it."""

    def __init__(self, settings: CoreSettings, select: Selector, signer: Signer) -> None:
        self.settings = settings
        self.select = select
        self.signer = signer
        self.events: list[CoreEvent] = []
        self._transactions: dict[str, ProxyTransaction] = {}
        self._branches: dict[str, Branch] = {}
        self._probes: dict[str, Probe] = {}
        # Finished transactions, kept only to answer retransmitted requests.
        self._recent = RecentAnswers()
        # Timer entries are (deadline, timer id): flat tuples the cycle collector ignores, that
        # keep nothing alive. Only targets with a timer running are in ``_timed``; a finished
        # transaction leaves it and is freed at once, its stale entries skipped when they pop.
        self._timers: list[tuple[float, int]] = []
        self._timed: dict[int, ProxyTransaction | Branch | Probe] = {}
        self._sequence = itertools.count(1)  # timer ids; 0 means "none yet"
        self._branch_ids = itertools.count(1)
        self._out: list[Send] = []

    # ------------------------------------------------------------------ public surface

    def receive(self, data: bytes, source: Address, transport: str, now: float) -> list[Send]:
        """Handle one datagram (or one framed stream message) from ``source``."""
        self._out = []
        if codec.is_keepalive(data):
            return []
        try:
            message = codec.parse(data, datagram=transport == "udp")
        except codec.MessageError as partial_error:
            self._reject(partial_error.partial, partial_error, source, transport)
            return self._out
        except RemoteProtocolError as error:  # (distinct names: mypyc types each one)
            self._note_rejected(None, error, source)
            return []
        if isinstance(message, Request):
            self._on_request(message, source, transport, now)
        else:
            self._on_response(message, now)
        return self._out

    def next_deadline(self) -> float | None:
        """When ``on_timer`` should be called next, or None when nothing is pending."""
        deadline: float | None = None
        while self._timers:
            at, timer_id = self._timers[0]
            target = self._timed.get(timer_id)
            if target is not None and target.scheduled == at:
                deadline = at
                break
            heapq.heappop(self._timers)  # stale entry: the target was rescheduled or finished
        until = self._recent.next_expiry()
        if until is not None:
            deadline = until if deadline is None else min(deadline, until)
        return deadline

    def on_timer(self, now: float) -> list[Send]:
        self._out = []
        self._recent.prune(now)
        while self._timers and self._timers[0][0] <= now:
            at, timer_id = heapq.heappop(self._timers)
            target = self._timed.get(timer_id)
            if target is None or target.scheduled != at:
                continue
            target.scheduled = None
            if isinstance(target, Branch):
                self._branch_timer(target, now)
            elif isinstance(target, Probe):
                self._probe_timer(target, now)
            else:
                self._server_timer(target, now)
        return self._out

    @property
    def transaction_count(self) -> int:
        return len(self._transactions)

    @property
    def branch_count(self) -> int:
        return len(self._branches)

    @property
    def remembered_count(self) -> int:
        """Finished transactions still answering retransmissions (flat records)."""
        return len(self._recent)

    @property
    def probe_count(self) -> int:
        return len(self._probes)

    def probe(self, hop: Hop, from_uri: str, timeout: float, now: float) -> tuple[str, list[Send]]:
        """Send an OPTIONS to ``hop``; its outcome comes later as a ``ProbeCompleted`` event.

        Returns the probe id and what to send. A hop whose transport has no listener
        completes at once with a 503, so the prober sees it as down.
        """
        self._out = []
        probe_id = f"{_BRANCH_PREFIX}P{next(self._branch_ids):x}"
        local = self.settings.local.get(hop.transport)
        if local is None:
            self.events.append(ProbeCompleted(probe_id, hop.key, hop.set_id, 503, None))
            return probe_id, []
        request = probes.build_options(hop, local, probe_id, from_uri).to_bytes()
        client = ClientTransaction(
            invite=False, reliable=hop.transport != "udp", now=now, timers=self.settings.timers
        )
        probe = Probe(probe_id, hop, request, client, now)
        probe.give_up_at = now + timeout
        self._probes[probe_id] = probe
        self._send(hop, request)
        self._schedule(probe)
        return probe_id, self._out

    def transport_failed(self, address: Address, transport: str, now: float) -> list[Send]:
        """A connection to ``address`` could not be made: its branches fail over at once."""
        self._out = []
        for branch in list(self._branches.values()):
            hop = branch.hop
            client = branch.client
            if (hop.host, hop.port) != address or hop.transport != transport:
                continue
            if client is None or client.final:
                continue
            client.terminate()
            branch.answer_by = None
            self._fail_branch(branch, 503, now)
            self._retire(branch)
        for probe in list(self._probes.values()):
            if (probe.hop.host, probe.hop.port) == address and probe.hop.transport == transport:
                self._finish_probe(probe, 503, None, now)
        return self._out

    # ------------------------------------------------------------------ requests

    def _on_request(self, request: Request, source: Address, transport: str, now: float) -> None:
        try:
            top = validation.validate_request(request)
        except RemoteProtocolError as exc:
            self._reject(request, exc, source, transport)
            return
        self._stamp_via(request, top, source)
        method = request.method
        if method == "ACK":
            self._on_ack(request, source, transport, now)
            return
        if method == "CANCEL":
            self._on_cancel(request, source, transport, now)
            return
        key = self._server_key(request)
        recent = self._recent.get(key)
        if recent is not None:
            self._out.append(Send(recent[2], recent[3], recent[1]))  # answered already
            return
        existing = self._transactions.get(key)
        if existing is not None:
            # A retransmission: the server transaction answers it, nothing goes downstream.
            if existing.server.receive_request() and existing.last_response:
                self._send_upstream(existing, existing.last_response)
            return
        if self._refuse(request, source, transport):
            return
        route = request.headers.first_value("route")
        if route is not None:
            self._route_in_dialog(request, route, source, transport)
        elif validation.has_to_tag(request):
            self._respond(request, 404, source, transport, reason="Not Here")
        elif self._is_for_us(request):
            self._respond(request, 200, source, transport)
        else:
            self._start_transaction(request, source, transport, now)

    def _refuse(self, request: Request, source: Address, transport: str) -> bool:
        """Checks of RFC 3261 16.3 that end in a response of our own (logged like errors)."""
        max_forwards = request.headers.get("max-forwards")
        if max_forwards is not None and int(max_forwards) == 0:
            refusal = RemoteProtocolError("Max-Forwards reached 0", 483)
            extra: list[tuple[str, str]] = []
        elif required := request.headers.values("proxy-require"):
            refusal = RemoteProtocolError(f"Proxy-Require {', '.join(required)}", 420)
            extra = [("Unsupported", ", ".join(required))]
        else:
            return False
        self._note_rejected(request, refusal, source)
        self._respond(request, refusal.status, source, transport, extra=extra)
        return True

    def _is_for_us(self, request: Request) -> bool:
        """OPTIONS to the balancer itself (a health check) is answered, not dispatched."""
        if request.method != "OPTIONS":
            return False
        uri = parse_uri(request.uri)
        return isinstance(uri, SipUri) and uri.user is None and self._is_local(uri)

    def _is_local(self, uri: SipUri) -> bool:
        port = uri.default_port()
        host = uri.host_address
        if (host, port) == self.settings.advertise:
            return True
        return any((host, port) == address for address in self.settings.local.values())

    def _stamp_via(self, request: Request, top: values.Via, source: Address) -> None:
        """Record where the request really came from (RFC 3261 18.2.1 received, RFC 3581 rport).

        rport is always filled, as Kamailio's force_rport does: responses then go back to the
        source address and port, which is what NAT and TCP connections need.
        """
        host, port = source
        text = _RECEIVED_RPORT.sub("", request.headers.first_value("via") or "")
        if top.host.strip("[]") != host:
            text += f";received={host}"
        request.headers.replace_first("via", f"{text};rport={port}")

    def _server_key(self, request: Request) -> str:
        """Transaction key (RFC 3261 17.2.3); RFC 2543 requests fall back to dialog identifiers."""
        via = request.headers.first_value("via") or ""
        branch_start = via.find(";branch=")
        method = "INVITE" if request.method in ("ACK", "CANCEL") else request.method
        if branch_start >= 0:
            branch = via[branch_start + 8 :].split(";", 1)[0].strip()
            if branch.startswith(values.MAGIC_COOKIE):
                sent_by = via.split(";", 1)[0]
                return f"{branch}|{sent_by}|{method}"
        from_tag = routing.from_tag(request.headers.get("from"))
        cseq = (request.headers.get("cseq") or "").split()[0]
        return f"2543|{request.call_id}|{from_tag}|{cseq}|{via.split(';', 1)[0]}|{method}"

    # ------------------------------------------------------------------ ACK and CANCEL

    def _on_ack(self, request: Request, source: Address, transport: str, now: float) -> None:
        txn = self._transactions.get(self._server_key(request))
        if txn is not None and txn.server.state is not ServerState.ACCEPTED:
            txn.server.receive_ack(now)  # ACK for our non-2xx final: hop-by-hop, absorbed
            self._schedule(txn)
            return
        route = request.headers.first_value("route")
        if route is not None:
            self._route_in_dialog(request, route, source, transport)
        # An ACK nobody can route is dropped: it cannot be answered.

    def _on_cancel(self, request: Request, source: Address, transport: str, now: float) -> None:
        txn = self._transactions.get(self._server_key(request))
        if txn is None:
            self._respond(request, 481, source, transport)
            return
        self._respond(request, 200, source, transport)
        if txn.answered or txn.cancelled:
            return
        txn.cancelled = True
        for branch in txn.branches:
            self._cancel_branch(branch, now)

    def _cancel_branch(self, branch: Branch, now: float) -> None:
        client = branch.client
        if client is None or client.final:
            return
        if not branch.provisional:
            branch.cancel_pending = True  # RFC 3261 9.1: wait for a provisional first
            return
        cancel = wire.build_cancel(branch.owner.request_for_downstream(), branch.via)
        self._send(branch.hop, cancel.to_bytes())
        # Timer C's job is done; if the 487 never comes, the answer timeout ends the branch.
        branch.ringing_until = None
        branch.answer_by = now + self.settings.timers.transaction_timeout
        self._schedule(branch)

    # ------------------------------------------------------------------ in-dialog routing

    def _route_in_dialog(
        self, request: Request, route: str, source: Address, transport: str
    ) -> None:
        """Loose routing (RFC 3261 16.4, 16.12) through our own signed Record-Route."""
        try:
            target = self._route_target(request, route, source)
        except RemoteProtocolError as exc:
            if request.method != "ACK":
                self._respond(request, exc.status, source, transport, reason=exc.reason)
            self._note_rejected(request, exc, source)
            return
        forwarded = request
        forwarded.headers.pop_first("route")
        self._prepare_forward(forwarded, record_route=False)
        top_via = forwarded.headers.first_value("via") or ""
        branch = f"{_BRANCH_PREFIX}S{self.signer.sign('via', top_via)}"
        local = self.settings.local.get(target.transport)
        if local is None:
            self._respond(request, 503, source, transport, reason="No Transport")
            return
        forwarded.headers.push_first("Via", _via_value(target.transport, local, branch))
        self._send(target, forwarded.to_bytes())
        if request.method == "BYE":
            self.events.append(DialogEnded(request.call_id))

    def _route_target(self, request: Request, route: str, source: Address) -> Hop:
        uri = values.parse_name_addr(route).uri
        if not isinstance(uri, SipUri) or not self._is_local(uri):
            raise RemoteProtocolError("Route does not point at this proxy", 403, "Forbidden")
        return routing.route_target(request, uri, source, self.signer)

    # ------------------------------------------------------------------ new transactions

    def _start_transaction(
        self, request: Request, source: Address, transport: str, now: float
    ) -> None:
        invite = request.method == "INVITE"
        server = ServerTransaction(
            invite=invite, reliable=transport != "udp", timers=self.settings.timers
        )
        txn = ProxyTransaction(self._server_key(request), request, (transport, source), server)
        self._transactions[txn.key] = txn
        if invite:
            self._answer(txn, wire.build_response(request, 100), now)
        selection = self.select(RequestSelection(request))
        txn.candidates = list(selection.hops)
        txn.parallel = selection.parallel
        if not txn.candidates:
            self.events.append(NoDestination(request.method))
            self._answer(txn, wire.build_response(request, 503, "No Destination Available"), now)
            return
        if txn.parallel:
            # Parallel forking: every candidate at once; the first 2xx cancels the others.
            for _ in txn.candidates:
                self._next_attempt(txn, now)
        else:
            self._next_attempt(txn, now)

    def _next_attempt(self, txn: ProxyTransaction, now: float) -> None:
        """Send to the next candidate (ds_next_dst), or answer upstream with the best final."""
        limit = len(txn.candidates)
        if not txn.parallel:
            limit = min(limit, self.settings.max_attempts)
        while txn.tried < limit and not txn.cancelled:
            hop = txn.candidates[txn.tried]
            txn.tried += 1
            local = self.settings.local.get(hop.transport)
            if local is None:
                continue  # no listener for that transport: cannot send there
            self._start_branch(txn, hop, local, now)
            return
        if self._pending(txn):
            return  # other forks are still running
        best = txn.best or wire.build_response(
            txn.request,
            487 if txn.cancelled else 503,
            None if txn.cancelled else "No Destination Available",
        )
        self._answer(txn, best, now)

    def _start_branch(self, txn: ProxyTransaction, hop: Hop, local: Address, now: float) -> None:
        # Signed over the Via below ours, like stateless branches: a late 2xx is then relayed
        # only to the hop that really sent the INVITE.
        below = txn.request.headers.first_value("via") or ""
        branch_id = f"{_BRANCH_PREFIX}T{next(self._branch_ids):x}.{self.signer.sign('via', below)}"
        via = _via_value(hop.transport, local, branch_id)
        branch = Branch(txn, hop, branch_id, via)
        outgoing = txn.request_for_downstream()
        self._prepare_forward(
            outgoing,
            record_route=outgoing.method in _DIALOG_METHODS,
            hop=hop,
            caller_transport=txn.upstream[0],
        )
        outgoing.headers.push_first("Via", via)
        branch.request = outgoing.to_bytes()
        branch.client = ClientTransaction(
            invite=outgoing.method == "INVITE",
            reliable=hop.transport != "udp",
            now=now,
            timers=self.settings.timers,
        )
        branch.started = now
        branch.answer_by = now + self.settings.answer_timeout
        txn.branches.append(branch)
        self._branches[branch_id] = branch
        request = txn.request
        self.events.append(BranchStarted(hop.key, hop.set_id, request.method, request.call_id))
        self._send(hop, branch.request)
        self._schedule(branch)

    def _prepare_forward(
        self,
        request: Request,
        *,
        record_route: bool,
        hop: Hop | None = None,
        caller_transport: str = "udp",
    ) -> None:
        """Max-Forwards and Record-Route (RFC 3261 16.6 steps 3 and 4)."""
        headers = request.headers
        max_forwards = headers.get("max-forwards")
        headers.set("Max-Forwards", "70" if max_forwards is None else str(int(max_forwards) - 1))
        if record_route and hop is not None:
            value = routing.record_route(
                request, hop, self.settings.advertise, caller_transport, self.signer
            )
            headers.push_first("Record-Route", value)

    # ------------------------------------------------------------------ responses

    def _on_response(self, response: Response, now: float) -> None:
        try:
            top = validation.validate_response(response)
        except RemoteProtocolError as exc:
            self._note_rejected(None, exc, None)
            return
        branch_id = top.branch or ""
        if not branch_id.startswith(_BRANCH_PREFIX):
            return  # not a Via of ours (RFC 4475 bcast): dropped
        cseq_method = (response.headers.get("cseq") or "").split()[-1]
        probe = self._probes.get(branch_id)
        if probe is not None:
            if response.status >= 200:
                rtt = now - probe.started
                self._finish_probe(probe, response.status, rtt, now, probes.retry_after(response))
            return
        branch = self._branches.get(branch_id)
        if branch is not None and cseq_method != "CANCEL":
            self._on_branch_response(branch, response, now)
        elif branch is None and (
            branch_id[len(_BRANCH_PREFIX)] == "S"
            or (cseq_method == "INVITE" and 200 <= response.status < 300)
        ):
            # Stateless relay: responses to in-dialog requests, and 2xx retransmissions that
            # outlive the INVITE transaction (RFC 3261 16.7 step 10).
            self._relay_stateless(response, branch_id)

    def _relay_stateless(self, response: Response, branch_id: str) -> None:
        headers = response.headers
        headers.pop_first("via")
        previous = headers.first_value("via")
        if previous is None:
            return
        signature = branch_id[len(_BRANCH_PREFIX) + 1 :].rpartition(".")[2]
        if not self.signer.verify(signature, "via", previous):
            return  # a Via we did not write: never reflect it anywhere
        via = values.parse_via(previous)
        host = via.params.get("received") or via.host.strip("[]")
        rport = via.params.get("rport")
        port = int(rport) if rport and rport.isdigit() else (via.port or 5060)
        self._out.append(Send(via.transport.lower(), (host, port), response.to_bytes()))

    def _on_branch_response(self, branch: Branch, response: Response, now: float) -> None:
        client = branch.client
        if client is None:
            return
        txn = branch.owner
        was_final = client.final
        actions = client.receive_response(response.status, now)
        branch.answer_by = None
        if Action.SEND_ACK in actions:
            ack = wire.build_ack(txn.request_for_downstream(), branch.via, response)
            self._send(branch.hop, ack.to_bytes())
        status = response.status
        if status < 200:
            if not branch.provisional:
                branch.provisional = True
                branch.ringing_until = now + self.settings.ringing_timeout
            if branch.cancel_pending:
                branch.cancel_pending = False
                self._cancel_branch(branch, now)
            elif status > 100 and not txn.answered:
                response.headers.pop_first("via")
                self._answer(txn, response, now)
            self._schedule(branch)
            return
        branch.ringing_until = None
        self._schedule(branch)
        if was_final and status >= 300:
            return  # retransmitted final: the ACK was resent above
        if status < 300:
            if not was_final:
                latency = now - branch.started
                self.events.append(
                    BranchAnswered(
                        branch.hop.key,
                        branch.hop.set_id,
                        latency,
                        txn.request.method,
                        txn.request.call_id,
                    )
                )
            response.headers.pop_first("via")
            # The branch is done: 2xx retransmissions are relayed statelessly (16.7 step 10).
            client.terminate()
            branch.answer_by = branch.ringing_until = None
            self._branches.pop(branch.id, None)
            self._unschedule(branch)
            if txn.server.state is ServerState.TERMINATED and txn.last_response is not None:
                self._send_upstream(txn, response.to_bytes())  # another fork's 2xx: relay it
                self._maybe_forget(txn)
                return
            self._answer(txn, response, now)
            self._cancel_others(txn, branch, now)
            return
        self.events.append(
            BranchFailed(branch.hop.key, branch.hop.set_id, status, txn.request.call_id)
        )
        response.headers.pop_first("via")
        if txn.best is None or _better(response.status, txn.best.status):
            txn.best = response
        if txn.answered:
            return
        if status in self.settings.failover_codes and not txn.cancelled and not txn.parallel:
            self._next_attempt(txn, now)
        elif not self._pending(txn):
            self._answer(txn, txn.best or response, now)

    def _pending(self, txn: ProxyTransaction) -> bool:
        return any(b.client is not None and not b.client.final for b in txn.branches)

    def _cancel_others(self, txn: ProxyTransaction, winner: Branch, now: float) -> None:
        for branch in txn.branches:
            if branch is not winner:
                self._cancel_branch(branch, now)

    # ------------------------------------------------------------------ timers

    def _branch_timer(self, branch: Branch, now: float) -> None:
        client = branch.client
        if client is None:
            return
        timed_out = False
        if branch.answer_by is not None and now >= branch.answer_by:
            branch.answer_by = None
            timed_out = not client.final
            client.terminate()
        elif branch.ringing_until is not None and now >= branch.ringing_until:
            branch.ringing_until = None  # Timer C: give up on a branch that rings forever
            self._cancel_branch(branch, now)
            timed_out = True
        else:
            for action in client.on_timer(now):
                if action is Action.RETRANSMIT:
                    self._send(branch.hop, branch.request)
                elif action is Action.TIMEOUT:
                    timed_out = True
        if timed_out:
            self._fail_branch(branch, 408, now)
        self._retire(branch)

    def _fail_branch(self, branch: Branch, status: int, now: float) -> None:
        """A branch ended without a response (timeout 408, transport error 503): go on."""
        txn = branch.owner
        call_id = txn.request.call_id
        self.events.append(BranchFailed(branch.hop.key, branch.hop.set_id, status, call_id))
        if txn.best is None:
            txn.best = wire.build_response(txn.request, 408)
        if status == 408 and not self.settings.failover_on_timeout:
            del txn.candidates[txn.tried :]  # no further attempt: answer with the best so far
        if not txn.answered and not self._pending(txn):
            self._next_attempt(txn, now)

    def _retire(self, branch: Branch) -> None:
        client = branch.client
        if client is not None and client.final and client.deadline is None:
            self._branches.pop(branch.id, None)
            self._unschedule(branch)
            self._maybe_forget(branch.owner)
        else:
            self._schedule(branch)

    def _probe_timer(self, probe: Probe, now: float) -> None:
        if now >= probe.give_up_at:
            self._finish_probe(probe, 408, None, now)
            return
        for action in probe.client.on_timer(now):
            if action is Action.RETRANSMIT:
                self._send(probe.hop, probe.request)
            elif action is Action.TIMEOUT:
                self._finish_probe(probe, 408, None, now)
                return
        self._schedule(probe)

    def _finish_probe(
        self, probe: Probe, status: int, rtt: float | None, now: float, retry: float | None = None
    ) -> None:
        probe.client.terminate()
        self._probes.pop(probe.id, None)
        self._unschedule(probe)
        hop = probe.hop
        self.events.append(ProbeCompleted(probe.id, hop.key, hop.set_id, status, rtt, retry))

    def _server_timer(self, txn: ProxyTransaction, now: float) -> None:
        for action in txn.server.on_timer(now):
            if action is Action.RETRANSMIT and txn.last_response:
                self._send_upstream(txn, txn.last_response)
        self._schedule(txn)
        self._maybe_forget(txn)

    def _maybe_forget(self, txn: ProxyTransaction) -> None:
        """Drop a transaction once the server side is done and no branch is alive."""
        if txn.server.state is ServerState.TERMINATED and not any(
            b.id in self._branches for b in txn.branches
        ):
            self._transactions.pop(txn.key, None)
            self._unschedule(txn)
            txn.branches.clear()  # break the branch <-> transaction cycle: freed at once

    def _schedule(self, target: ProxyTransaction | Branch | Probe) -> None:
        deadline = target.deadline
        if deadline is None:
            self._unschedule(target)
        elif deadline != target.scheduled:
            if not target.timer_id:
                target.timer_id = next(self._sequence)
            self._timed[target.timer_id] = target
            target.scheduled = deadline
            heapq.heappush(self._timers, (deadline, target.timer_id))
            if len(self._timers) > 4 * len(self._timed) + 1024:
                self._compact_timers()

    def _compact_timers(self) -> None:
        """Rebuild the heap from live entries: stale ones (a Timer C set 180 s ahead, then
        answered) would otherwise pile up until their time comes. Amortised O(1) per push."""
        self._timers = [
            (target.scheduled, timer_id)
            for timer_id, target in self._timed.items()
            if target.scheduled is not None
        ]
        heapq.heapify(self._timers)

    def _unschedule(self, target: ProxyTransaction | Branch | Probe) -> None:
        """Forget a target's timers: its heap entries become stale and hold nothing."""
        target.scheduled = None
        self._timed.pop(target.timer_id, None)

    # ------------------------------------------------------------------ sending

    def _answer(self, txn: ProxyTransaction, response: Response, now: float) -> None:
        """Send a response upstream through the server transaction."""
        try:
            txn.server.send_response(response.status, now)
        except LocalProtocolError:  # a second final after a 2xx: RFC 3261 16.7 step 5 drops it
            return
        data = response.to_bytes()
        txn.last_response = data
        self._send_upstream(txn, data)
        server = txn.server
        if server.state is ServerState.ACCEPTED or (
            not server.invite and server.state is ServerState.COMPLETED
        ):
            # Only a retransmitted request can still need this transaction (a 2xx needs no
            # ACK from us, a non-INVITE final none at all): a flat record answers it.
            self._remember(txn, data, now)
            server.terminate()
        self._schedule(txn)
        if response.status >= 200 and not self._pending(txn):
            self._maybe_forget(txn)

    def _remember(self, txn: ProxyTransaction, data: bytes, now: float) -> None:
        timers = self.settings.timers
        # INVITEs stop being retransmitted at the first provisional: a few T2 is plenty.
        keep = 2 * timers.t2 if txn.server.invite else timers.transaction_timeout
        self._recent.remember(txn.key, keep, now, (data, *txn.upstream))
        self._recent.prune(now)

    def _send_upstream(self, txn: ProxyTransaction, data: bytes) -> None:
        transport, address = txn.upstream
        self._out.append(Send(transport, address, data))

    def _send(self, hop: Hop, data: bytes) -> None:
        self._out.append(Send(hop.transport, (hop.host, hop.port), data))

    def _respond(
        self,
        request: Request,
        status: int,
        source: Address,
        transport: str,
        *,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """A stateless response of our own, sent back where the request came from."""
        response = wire.build_response(request, status, reason, extra)
        self._out.append(Send(transport, source, response.to_bytes()))

    def _reject(
        self,
        partial: Request | Response | None,
        exc: RemoteProtocolError,
        source: Address,
        transport: str,
    ) -> None:
        """Answer a malformed request if it can be answered at all, and log it once.

        The answer goes back to the source address, not by Via: the Via may be what is broken.
        A request without any Via, and an ACK, cannot be answered.
        """
        self._note_rejected(partial, exc, source)
        if not isinstance(partial, Request) or partial.method == "ACK":
            return
        if partial.headers.get("via") is None:
            return
        self._respond(partial, exc.status, source, transport, reason=exc.reason)

    def _note_rejected(
        self, message: Request | Response | None, exc: RemoteProtocolError, source: Address | None
    ) -> None:
        kind = "request" if isinstance(message, Request) else "message"
        call_id = message.call_id if message is not None else "?"
        log.warning(
            "rejected %s (Call-ID %s) from %s: %s (%d)", kind, call_id, source, exc, exc.status
        )
        self.events.append(MessageRejected(exc.status, str(exc)))


def _via_value(transport: str, local: Address, branch: str) -> str:
    return f"SIP/2.0/{transport.upper()} {format_host(local[0], local[1])};branch={branch};rport"


def _better(status: int, than: int) -> bool:
    """RFC 3261 16.7 step 6: prefer 6xx, then the lowest class, avoiding 408 and 503."""

    def rank(code: int) -> tuple[int, int]:
        if code >= 600:
            return (0, code)
        return (1 + (code in (408, 503)), code)

    return rank(status) < rank(than)
