"""Stateful forwarding (RFC 3261 16.6, 16.7): new requests, failover, forking and CANCEL.

Each new out-of-dialog request gets a ``ProxyTransaction``: a server transaction upstream and
one client transaction per attempt downstream (a ``Branch``), for retransmissions, failover and
CANCEL. A response moves its transaction by the ``STEPS`` table; the finished transaction leaves
only a flat record in ``RecentAnswers`` to answer retransmitted requests.
"""

from __future__ import annotations

import itertools
from typing import Final

from sipdispatch.proxy.core import secure
from sipdispatch.proxy.core.affinity import ChallengeAffinity
from sipdispatch.proxy.core.deadlines import Deadlines, RecentAnswers
from sipdispatch.proxy.core.dialogs import Signer, record_routes
from sipdispatch.proxy.core.outbox import (
    BRANCH_PREFIX,
    Outbox,
    build_ack,
    build_cancel,
    build_response,
    count_hop,
    via_value,
)
from sipdispatch.proxy.core.policy import loop_tag
from sipdispatch.proxy.core.records import (
    Address,
    CoreSettings,
    Hop,
    Listener,
    RequestSelection,
    Selector,
)
from sipdispatch.proxy.core.transaction import (
    STEPS,
    Branch,
    ProxyTransaction,
    Step,
    Upstream,
    response_class,
)
from sipdispatch.proxy.events import (
    BranchAnswered,
    BranchFailed,
    BranchStarted,
    HashKeyMissing,
    NoDestination,
    RequestRefused,
)
from sipdispatch.sip import values
from sipdispatch.sip.errors import LocalProtocolError
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.transaction import (
    Action,
    ClientTransaction,
    ServerState,
    ServerTransaction,
)

__all__ = ["Forwarder"]

_DIALOG_METHODS: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
_CHALLENGES: Final = frozenset({401, 407})


class Forwarder:
    """The proxy transactions in flight and the answers of those just finished."""

    def __init__(
        self, settings: CoreSettings, select: Selector, signer: Signer, deadlines: Deadlines
    ) -> None:
        self.settings = settings
        self.select = select
        self.signer = signer
        self.transactions: dict[str, ProxyTransaction] = {}
        self.branches: dict[str, Branch] = {}
        # Finished transactions, kept only to answer retransmitted requests.
        self.recent = RecentAnswers()
        self._deadlines = deadlines
        self._ids = itertools.count(1)
        #: who challenged which Call-ID: its retry goes back there
        self.challenged = ChallengeAffinity(
            settings.challenge_affinity_ttl, settings.challenge_affinity_size
        )
        #: new requests refused because ``max_transactions`` were alive
        self.refused = 0

    # ------------------------------------------------------------------ requests

    def retransmission(self, key: str, out: Outbox) -> bool:
        """Answer a retransmitted request from what it was answered before; False if it is new."""
        recent = self.recent.get(key)
        if recent is not None:
            data, listener, address = recent
            out.send_back((listener, address), data)  # answered already
            return True
        existing = self.transactions.get(key)
        if existing is None:
            return False
        # The server transaction answers it, nothing goes downstream.
        if existing.server.receive_request() and existing.last_response:
            out.send_back(existing.upstream, existing.last_response, existing.fallback)
        return True

    def on_ack(self, key: str, now: float) -> bool:
        """Absorb the ACK for our own non-2xx final (hop-by-hop); False if it is not one."""
        txn = self.transactions.get(key)
        if txn is None or txn.server.state is ServerState.ACCEPTED:
            return False
        txn.server.receive_ack(now)
        self._deadlines.schedule(txn)
        return True

    def on_cancel(
        self,
        request: Request,
        key: str,
        upstream: tuple[Listener, Address],
        now: float,
        out: Outbox,
    ) -> None:
        listener, source = upstream
        txn = self.transactions.get(key)
        if txn is None:
            out.respond(request, 481, source, listener)
            return
        out.respond(request, 200, source, listener)
        if txn.answered or txn.cancelled:
            return
        txn.cancelled = True
        for branch in txn.branches:
            self._cancel_branch(branch, now, out)

    def start(  # noqa: PLR0917 - the request, its two derived values, its origin, the time
        self,
        request: Request,
        key: str,
        via: str,
        upstream: tuple[Listener, Address],
        now: float,
        out: Outbox,
        *,
        fallback: Address | None = None,
    ) -> None:
        """A new transaction for ``request``, whose forwarded top Via is ``via``; over a
        stream, its responses go to ``fallback`` once the caller's connection is gone."""
        admission = self.settings.admission
        cap = admission.max_transactions
        if cap and len(self.transactions) >= cap:
            # Full: refused statelessly, so that the refusal itself costs no state.
            self.refused += 1
            retry = [("Retry-After", str(admission.retry_after))]
            out.respond(request, 503, upstream[1], upstream[0], extra=retry)
            return
        invite = request.method == "INVITE"
        server = ServerTransaction(
            invite=invite, reliable=upstream[0].transport != "udp", timers=self.settings.timers
        )
        txn = ProxyTransaction(key, request, via, upstream, server, fallback=fallback)
        self.transactions[key] = txn
        ctx = RequestSelection(request, upstream[1][0])
        if self.challenged:
            ctx.affinity = self.challenged.lookup(request.call_id, now)
        selection = self.select(ctx)
        refusal = selection.refusal
        if refusal is not None:
            out.report(
                RequestRefused(
                    refusal.cause,
                    refusal.route,
                    refusal.status,
                    request.method,
                    request.call_id,
                    upstream[1],
                )
            )
            response = build_response(request, refusal.status, refusal.reason or None)
            self._answer(txn, response, now, out)
            return
        if invite:
            self._answer(txn, build_response(request, 100), now, out)
        if selection.key_missing is not None:
            out.report(HashKeyMissing(selection.key_missing, request.call_id, upstream[1]))
        txn.candidates = list(selection.hops)
        if txn.candidates and secure.is_sips(request.uri):
            txn.candidates = secure.tls_hops(txn.candidates, self.settings)
            if not txn.candidates:
                out.report(NoDestination(request.method))
                response = build_response(request, secure.STATUS, secure.REASON)
                self._answer(txn, response, now, out)
                return
        txn.parallel = selection.parallel
        if ctx.affinity is not None and not txn.parallel:
            ChallengeAffinity.put_first(ctx.affinity, txn.candidates)  # whatever the selector did
        if not txn.candidates:
            out.report(NoDestination(request.method))
            self._answer(txn, build_response(request, 503, "No Destination Available"), now, out)
            return
        if txn.parallel:
            # Parallel forking: every candidate at once; the first 2xx cancels the others.
            for _ in txn.candidates:
                self._next_attempt(txn, now, out)
        else:
            self._next_attempt(txn, now, out)

    def _next_attempt(self, txn: ProxyTransaction, now: float, out: Outbox) -> None:
        """Send to the next candidate (ds_next_dst), or answer upstream with the best final."""
        limit = len(txn.candidates)
        if not txn.parallel:
            limit = min(limit, self.settings.max_attempts)
        while txn.tried < limit and not txn.cancelled:
            hop = txn.candidates[txn.tried]
            txn.tried += 1
            listener = self.settings.outbound(hop, txn.upstream[0])
            if listener is None:
                continue  # no listener for that transport and family: cannot send there
            self._start_branch(txn, hop, listener, now, out)
            return
        if txn.pending:
            return  # other forks are still running
        best = txn.best or build_response(
            txn.request,
            487 if txn.cancelled else 503,
            None if txn.cancelled else "No Destination Available",
        )
        self._answer(txn, best, now, out)

    def _start_branch(
        self, txn: ProxyTransaction, hop: Hop, listener: Listener, now: float, out: Outbox
    ) -> None:
        # Signed over the Via below ours, like stateless branches: a late 2xx is then relayed
        # only to the hop that really sent the INVITE. The loop tag between them lets this
        # proxy know the request if it ever comes back unchanged (``Proxy._looped``).
        signature = self.signer.sign("via", values.via_compared_form(txn.via))
        if txn.loop_tag is None and self.settings.policy.loops:
            txn.loop_tag = loop_tag(txn.request)
        tag = f".{txn.loop_tag}" if txn.loop_tag is not None else ""
        branch_id = f"{BRANCH_PREFIX}T{next(self._ids):x}{tag}.{signature}"
        via = via_value(hop.transport, listener.local, branch_id)
        branch = Branch(txn, hop, branch_id, via, listener)
        outgoing = txn.request_for_downstream()
        count_hop(outgoing, self.settings.policy.max_forwards)
        if outgoing.method in _DIALOG_METHODS:
            settings = self.settings
            expires = int(now + settings.clock_offset + settings.dialog_lifetime)
            inbound, caller = txn.upstream
            # RFC 5658: one route per side when the request changes listener, top one first
            for value in reversed(
                record_routes(
                    outgoing,
                    hop,
                    inbound,
                    listener,
                    self.signer,
                    expires=expires,
                    flow=None if inbound.transport == "udp" else caller,
                )
            ):
                outgoing.headers.push_first("Record-Route", value)
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
        self.branches[branch_id] = branch
        request = txn.request
        out.report(BranchStarted(hop.key, request.method, request.call_id))
        out.send(hop, branch.request, listener)
        self._deadlines.schedule(branch)

    def _cancel_branch(self, branch: Branch, now: float, out: Outbox) -> None:
        client = branch.client
        if client is None or client.final:
            return
        branch.cancelled = True
        if not branch.provisional:
            branch.cancel_pending = True  # RFC 3261 9.1: wait for a provisional first
            return
        cancel = build_cancel(branch.owner.request_for_downstream(), branch.via)
        out.send(branch.hop, cancel.to_bytes(), branch.listener)
        # Timer C's job is done; if the 487 never comes, the answer timeout ends the branch.
        branch.ringing_until = None
        branch.answer_by = now + self.settings.timers.transaction_timeout
        self._deadlines.schedule(branch)

    # ------------------------------------------------------------------ responses

    def on_response(self, branch: Branch, response: Response, now: float, out: Outbox) -> None:
        """A response on one of our branches: the branch first, then its transaction."""
        client = branch.client
        if client is None:
            return
        was_final = client.final
        actions = client.receive_response(response.status, now)
        txn = branch.owner
        if Action.SEND_ACK in actions:
            ack = build_ack(txn.request_for_downstream(), branch.via, response)
            out.send(branch.hop, ack.to_bytes(), branch.listener)
        if was_final:
            return  # a retransmitted final (its ACK resent above) or a stray: absorbed
        branch.answer_by = None
        cls = response_class(response.status)
        if cls == 1:
            if not self._provisional(branch, now, out):
                return
        elif cls == 2:
            self._accepted(branch, now, out)
        else:
            self._rejected(branch, response, now, out)
        response.headers.pop_first("via")
        self._follow(STEPS[(txn.upstream_state, cls)], branch, response, now, out)

    def _follow(
        self, step: Step, branch: Branch, response: Response, now: float, out: Outbox
    ) -> None:
        """Take the transaction's ``step`` for ``response`` (our Via already taken off)."""
        txn = branch.owner
        if step is Step.RELAY:
            if response.status > 100:
                self._answer(txn, response, now, out)
        elif step is Step.ACCEPT:
            self._answer(txn, response, now, out)
            for other in txn.branches:
                if other is not branch:
                    self._cancel_branch(other, now, out)
        elif step is Step.RELAY_LATE:
            out.send_back(txn.upstream, response.to_bytes(), txn.fallback)  # another fork's 2xx
            self._maybe_forget(txn)
        elif step is Step.FAIL_OVER:
            if (
                response.status in self.settings.failover_codes
                and not txn.cancelled
                and not txn.parallel
            ):
                self._next_attempt(txn, now, out)
            elif not txn.pending:
                self._answer(txn, txn.best or response, now, out)
        else:
            self._maybe_forget(txn)  # KEEP and DROP: nothing goes upstream

    def _provisional(self, branch: Branch, now: float, out: Outbox) -> bool:
        """Timer C starts at the first provisional; a CANCEL waiting for it goes now (and the
        provisional stays here). Returns whether the transaction is to see it."""
        if not branch.provisional:
            branch.provisional = True
            branch.ringing_until = now + self.settings.ringing_timeout
        if branch.cancel_pending:
            branch.cancel_pending = False
            self._cancel_branch(branch, now, out)
            return False
        self._deadlines.schedule(branch)
        return True

    def _accepted(self, branch: Branch, now: float, out: Outbox) -> None:
        """The branch is done at its 2xx: retransmissions are relayed statelessly (16.7
        step 10)."""
        hop = branch.hop
        request = branch.owner.request
        latency = now - branch.started
        out.report(BranchAnswered(hop.key, latency, request.method, request.call_id))
        if self.challenged:
            self.challenged.forget(request.call_id)
        if branch.client is not None:
            branch.client.terminate()
        branch.answer_by = branch.ringing_until = None
        self.branches.pop(branch.id, None)
        self._deadlines.unschedule(branch)

    def _rejected(self, branch: Branch, response: Response, now: float, out: Outbox) -> None:
        """A failure ends the branch (its client transaction absorbs retransmissions)."""
        txn = branch.owner
        branch.ringing_until = None
        self._deadlines.schedule(branch)
        hop = branch.hop
        cancelled = branch.cancelled or txn.cancelled
        out.report(BranchFailed(hop.key, response.status, txn.request.call_id, True, cancelled))
        if response.status in _CHALLENGES:
            self.challenged.remember(txn.request.call_id, hop, now)
        txn.offer(response)

    # ------------------------------------------------------------------ timers and failures

    def branch_timer(self, branch: Branch, now: float, out: Outbox) -> None:
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
            self._cancel_branch(branch, now, out)
            timed_out = True
        else:
            for action in client.on_timer(now):
                if action is Action.RETRANSMIT:
                    out.send(branch.hop, branch.request, branch.listener)
                elif action is Action.TIMEOUT:
                    timed_out = True
        if timed_out:
            self._fail_branch(branch, 408, now, out)
        self._retire(branch)

    def server_timer(self, txn: ProxyTransaction, now: float, out: Outbox) -> None:
        for action in txn.server.on_timer(now):
            if action is Action.RETRANSMIT and txn.last_response:
                out.send_back(txn.upstream, txn.last_response, txn.fallback)
        self._deadlines.schedule(txn)
        self._maybe_forget(txn)

    def transport_failed(self, address: Address, transport: str, now: float, out: Outbox) -> None:
        """A connection to ``address`` failed or broke: its branches fail over at once."""
        for branch in list(self.branches.values()):
            hop = branch.hop
            client = branch.client
            if (hop.host, hop.port) != address or hop.transport != transport:
                continue
            if client is None or client.final:
                continue
            client.terminate()
            branch.answer_by = None
            self._fail_branch(branch, 503, now, out)
            self._retire(branch)

    def _fail_branch(self, branch: Branch, status: int, now: float, out: Outbox) -> None:
        """A branch ended without a response (timeout 408, transport error 503): go on."""
        txn = branch.owner
        cancelled = branch.cancelled or txn.cancelled
        out.report(BranchFailed(branch.hop.key, status, txn.request.call_id, False, cancelled))
        if txn.best is None:
            txn.best = build_response(txn.request, 408)
        if status == 408 and not self.settings.failover_on_timeout:
            del txn.candidates[txn.tried :]  # no further attempt: answer with the best so far
        if not txn.answered and not txn.pending:
            self._next_attempt(txn, now, out)

    def _retire(self, branch: Branch) -> None:
        client = branch.client
        if client is not None and client.final and client.deadline is None:
            self.branches.pop(branch.id, None)
            self._deadlines.unschedule(branch)
            self._maybe_forget(branch.owner)
        else:
            self._deadlines.schedule(branch)

    def _maybe_forget(self, txn: ProxyTransaction) -> None:
        """Drop a transaction once the server side is done and no branch is alive."""
        if txn.server.state is ServerState.TERMINATED and not any(
            b.id in self.branches for b in txn.branches
        ):
            self.transactions.pop(txn.key, None)
            self._deadlines.unschedule(txn)
            txn.branches.clear()  # break the branch <-> transaction cycle: freed at once

    # ------------------------------------------------------------------ answering upstream

    def _answer(self, txn: ProxyTransaction, response: Response, now: float, out: Outbox) -> None:
        """Send a response upstream through the server transaction."""
        status = response.status
        try:
            txn.server.send_response(status, now)
        except LocalProtocolError:  # a second final after a 2xx: RFC 3261 16.7 step 5 drops it
            return
        if status >= 200:
            txn.upstream_state = Upstream.ACCEPTED if status < 300 else Upstream.REJECTED
        data = response.to_bytes()
        txn.last_response = data
        out.send_back(txn.upstream, data, txn.fallback)
        server = txn.server
        if server.state is ServerState.ACCEPTED or (
            not server.invite and server.state is ServerState.COMPLETED
        ):
            # Only a retransmitted request can still need this transaction (a 2xx needs no
            # ACK from us, a non-INVITE final none at all): a flat record answers it. INVITEs
            # stop being retransmitted at the first provisional: a few T2 is plenty.
            timers = self.settings.timers
            keep = 2 * timers.t2 if server.invite else timers.transaction_timeout
            self.recent.remember(txn.key, keep, now, (data, *txn.upstream))
            self.recent.prune(now)
            server.terminate()
        self._deadlines.schedule(txn)
        if status >= 200 and not txn.pending:
            self._maybe_forget(txn)
