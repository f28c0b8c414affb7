"""The stateful proxy transaction (RFC 3261 16.7): one server side, one branch per attempt.

Plain records with a ``deadline`` each; ``forwarding`` moves them. What a branch's response
means for its transaction is a table, like the SIP transactions' own: the key is what the caller
has been told so far (``Upstream``) and the response class, the value the ``Step`` to take.
"""

from __future__ import annotations

from typing import Final

from sipdispatch.proxy.core.deadlines import Timed
from sipdispatch.proxy.core.records import Address, Hop, Listener
from sipdispatch.sip.identityenum import IdentityEnum
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.transaction import ClientTransaction, ServerTransaction

__all__ = ["STEPS", "Branch", "ProxyTransaction", "Step", "Upstream", "response_class"]


class Upstream(IdentityEnum):
    """What the caller has been told so far."""

    WAITING = "waiting"  # no final response yet (provisionals may have gone)
    ACCEPTED = "accepted"  # a 2xx
    REJECTED = "rejected"  # a 3xx-6xx


class Step(IdentityEnum):
    """What a branch's response does to its transaction."""

    RELAY = "relay"  # a provisional: pass it upstream (a 100 is hop-by-hop and stays here)
    ACCEPT = "accept"  # the first 2xx: pass it upstream, cancel the other branches
    RELAY_LATE = "relay_late"  # another fork's 2xx after the first: pass it upstream as is
    FAIL_OVER = "fail_over"  # a failure: keep the best, try the next destination or answer
    KEEP = "keep"  # a failure after the answer: only remembered as the best
    DROP = "drop"  # nothing goes upstream


# (upstream, response class) -> step. Class 1 = provisional, 2 = 2xx, 3 = 300-699. A 2xx after
# a failure was sent upstream cannot be sent any more (RFC 3261 16.7 step 5).
STEPS: Final[dict[tuple[Upstream, int], Step]] = {
    (Upstream.WAITING, 1): Step.RELAY,
    (Upstream.WAITING, 2): Step.ACCEPT,
    (Upstream.WAITING, 3): Step.FAIL_OVER,
    (Upstream.ACCEPTED, 1): Step.DROP,
    (Upstream.ACCEPTED, 2): Step.RELAY_LATE,
    (Upstream.ACCEPTED, 3): Step.KEEP,
    (Upstream.REJECTED, 1): Step.DROP,
    (Upstream.REJECTED, 2): Step.DROP,
    (Upstream.REJECTED, 3): Step.KEEP,
}


def response_class(status: int) -> int:
    return 1 if status < 200 else 2 if status < 300 else 3


class ProxyTransaction(Timed):
    """A stateful proxy transaction: the upstream server side and its downstream branches."""

    __slots__ = (
        "best",
        "branches",
        "cancelled",
        "candidates",
        "fallback",
        "key",
        "last_response",
        "loop_tag",
        "parallel",
        "request",
        "server",
        "tried",
        "upstream",
        "upstream_state",
        "via",
    )

    def __init__(
        self,
        key: str,
        request: Request,
        via: str,
        upstream: tuple[Listener, Address],
        server: ServerTransaction,
        *,
        fallback: Address | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self.request = request
        self.via = via  # the caller's Via as forwarded (received and rport filled in)
        self.upstream = upstream
        #: over a stream, where responses go once the caller's connection is gone (18.2.2)
        self.fallback = fallback
        self.server = server
        self.upstream_state = Upstream.WAITING
        self.last_response: bytes | None = None
        self.candidates: list[Hop] = []
        self.tried = 0
        self.branches: list[Branch] = []
        self.best: Response | None = None
        self.cancelled = False
        self.parallel = False
        #: what loop detection knows the request by (``policy.loop_tag``), made at the first
        #: branch when loop detection is on
        self.loop_tag: str | None = None

    @property
    def deadline(self) -> float | None:
        return self.server.deadline

    @property
    def answered(self) -> bool:
        return self.upstream_state is not Upstream.WAITING

    @property
    def pending(self) -> bool:
        """Whether a branch still waits for its final response."""
        return any(b.client is not None and not b.client.final for b in self.branches)

    def offer(self, response: Response) -> None:
        """Keep ``response`` if it is the best final so far (RFC 3261 16.7 step 6)."""
        if self.best is None or _rank(response.status) < _rank(self.best.status):
            self.best = response

    def request_for_downstream(self) -> Request:
        """A fresh copy of the received request, to be changed for one branch."""
        return self.request.copy()


class Branch(Timed):
    """One attempt of a ``ProxyTransaction`` towards one destination."""

    __slots__ = (
        "answer_by",
        "cancel_pending",
        "cancelled",
        "client",
        "hop",
        "id",
        "listener",
        "owner",
        "provisional",
        "request",
        "ringing_until",
        "started",
        "via",
    )

    def __init__(
        self, owner: ProxyTransaction, hop: Hop, branch_id: str, via: str, listener: Listener
    ) -> None:
        super().__init__()
        self.owner = owner
        self.hop = hop
        #: the listener the branch's requests (and its CANCEL and ACK) leave from
        self.listener = listener
        self.id = branch_id
        self.via = via
        self.request: bytes = b""
        self.client: ClientTransaction | None = None
        self.started = 0.0
        self.answer_by: float | None = None  # no response at all by then: a 408 (fr_timer)
        self.ringing_until: float | None = None  # Timer C
        self.provisional = False
        self.cancel_pending = False  # a CANCEL waits for the first provisional (RFC 3261 9.1)
        #: a CANCEL was asked for: how the branch ends says nothing about the destination
        self.cancelled = False

    @property
    def deadline(self) -> float | None:
        # the earliest of three optional times, without building a list: asked on every
        # message of the branch
        deadline = self.answer_by
        ringing = self.ringing_until
        if ringing is not None and (deadline is None or ringing < deadline):
            deadline = ringing
        client = self.client
        if client is not None:
            timer = client.deadline
            if timer is not None and (deadline is None or timer < deadline):
                deadline = timer
        return deadline


def _rank(status: int) -> tuple[int, int]:
    """6xx first, then the lowest class, avoiding 408 and 503 (RFC 3261 16.7 step 6)."""
    if status >= 600:
        return (0, status)
    return (1 + (status in (408, 503)), status)
