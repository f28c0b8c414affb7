"""What the proxy core keeps: its settings, the hops it sends to, and its transactions.

Plain data with a ``deadline`` each; the logic that moves them lives in ``core``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sipdispatch.proxy.selection import RequestSelection
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.transaction import (
    ClientTransaction,
    ServerState,
    ServerTransaction,
    Timers,
)

__all__ = [
    "Address",
    "Branch",
    "CoreSettings",
    "Hop",
    "ProxyTransaction",
    "Selection",
    "Selector",
    "Send",
]

Address = tuple[str, int]


# Records made for every message are dataclasses with a hand-written __init__, not frozen:
# mypyc runs a frozen dataclass's generated __init__ interpreted (about 440 ns a record
# against 85 ns compiled). Treat them as immutable all the same.
@dataclass(slots=True, init=False, unsafe_hash=True)
class Send:
    """One message to put on the wire."""

    transport: str  # "udp" or "tcp"
    address: Address
    data: bytes

    def __init__(self, transport: str, address: Address, data: bytes) -> None:
        self.transport = transport
        self.address = address
        self.data = data


@dataclass(slots=True, init=False, unsafe_hash=True)
class Hop:
    """A destination to try, as the dispatcher chose it."""

    host: str  # without IPv6 brackets
    port: int
    transport: str
    key: str  # the destination's identity (its URI), for health and metrics
    set_id: int = 0

    def __init__(self, host: str, port: int, transport: str, key: str, set_id: int = 0) -> None:
        self.host = host
        self.port = port
        self.transport = transport
        self.key = key
        self.set_id = set_id


@dataclass(frozen=True, slots=True)
class Selection:
    """The dispatcher's answer for one new request."""

    #: ordered candidates: first = chosen, then the failover order (``ds_next_dst``)
    hops: Sequence[Hop]
    #: try every candidate at once (algorithm 12, parallel forking); first 2xx wins
    parallel: bool = False


Selector = Callable[[RequestSelection], Selection]


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """What the core needs to know about itself."""

    #: this replica's own address per transport, written in Via (responses come back here)
    local: dict[str, Address]
    #: the address callers reach the service at, written in Record-Route (any replica answers)
    advertise: Address
    timers: Timers = field(default_factory=Timers)
    #: final responses that make an INVITE move on to the next destination
    failover_codes: frozenset[int] = frozenset({408, *range(500, 600)})
    #: no response at all from a destination within this time counts as a 408 (fr_timer)
    answer_timeout: float = 5.0
    #: whether such a timeout moves on to the next destination (failover.onTimeout)
    failover_on_timeout: bool = True
    #: ringing without a final for this long cancels the branch (Timer C, fr_inv_timer)
    ringing_timeout: float = 180.0
    max_attempts: int = 3


class Branch:
    """One attempt of a ``ProxyTransaction`` towards one destination."""

    __slots__ = (
        "answer_by",
        "cancel_pending",
        "client",
        "hop",
        "id",
        "owner",
        "provisional",
        "request",
        "ringing_until",
        "scheduled",
        "started",
        "timer_id",
        "via",
    )

    def __init__(self, owner: ProxyTransaction, hop: Hop, branch_id: str, via: str) -> None:
        self.owner = owner
        self.hop = hop
        self.id = branch_id
        self.via = via
        self.request: bytes = b""
        self.client: ClientTransaction | None = None
        self.started = 0.0
        self.answer_by: float | None = None
        self.ringing_until: float | None = None
        self.provisional = False
        self.cancel_pending = False
        self.scheduled: float | None = None
        self.timer_id = 0  # the core's handle for its timer entries (0: none yet)

    @property
    def deadline(self) -> float | None:
        times = [t for t in (self.answer_by, self.ringing_until) if t is not None]
        if self.client is not None and self.client.deadline is not None:
            times.append(self.client.deadline)
        return min(times) if times else None


class ProxyTransaction:
    """A stateful proxy transaction: the upstream server side and its downstream branches."""

    __slots__ = (
        "best",
        "branches",
        "cancelled",
        "candidates",
        "key",
        "last_response",
        "parallel",
        "request",
        "scheduled",
        "server",
        "timer_id",
        "tried",
        "upstream",
    )

    def __init__(
        self, key: str, request: Request, upstream: tuple[str, Address], server: ServerTransaction
    ) -> None:
        self.key = key
        self.request = request
        self.upstream = upstream
        self.server = server
        self.last_response: bytes | None = None
        self.candidates: list[Hop] = []
        self.tried = 0
        self.branches: list[Branch] = []
        self.best: Response | None = None
        self.cancelled = False
        self.parallel = False
        self.scheduled: float | None = None
        self.timer_id = 0  # the core's handle for its timer entries (0: none yet)

    @property
    def deadline(self) -> float | None:
        return self.server.deadline

    @property
    def answered(self) -> bool:
        return self.server.state is not ServerState.PROCEEDING

    def request_for_downstream(self) -> Request:
        """A fresh copy of the received request, to be changed for one branch."""
        return self.request.copy()
