"""RFC 3261 section 17 transactions as sans-I/O state machines (aioquic shape).

Each machine takes events with the current time (``now``), exposes the one ``deadline`` it wants
to be woken at, and returns what to do as a list of ``Action`` values; it never touches a socket
or a clock. Timer values follow RFC 3261 Table 4, scaled by ``Timers`` so tests and deployments
can shorten them. RFC 6026's Accepted state is used for INVITE 2xx: the transaction stays to
absorb retransmitted 2xx responses, which a proxy forwards statelessly.

Transitions are tables: a move that is not in the table is a ``LocalProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sipdispatch.sip.errors import LocalProtocolError
from sipdispatch.sip.identityenum import IdentityEnum

__all__ = [
    "Action",
    "ClientState",
    "ClientTransaction",
    "ServerState",
    "ServerTransaction",
    "Timers",
]


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 Table 4 (seconds). ``T1`` is the RTT estimate, ``T2`` the retransmit cap."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def transaction_timeout(self) -> float:  # Timers B, F, H, J (64*T1)
        return 64 * self.t1


class Action(IdentityEnum):
    """What a transaction asks its owner to do."""

    RETRANSMIT = "retransmit"  # send the request (client) or the last response (server) again
    TIMEOUT = "timeout"  # no final response in time (client) / no ACK in time (server)
    TERMINATED = "terminated"  # forget the transaction
    SEND_ACK = "send_ack"  # a retransmitted non-2xx final reached a completed INVITE client


class ClientState(IdentityEnum):
    CALLING = "calling"  # INVITE sent, nothing heard (non-INVITE: TRYING)
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class ServerState(IdentityEnum):
    PROCEEDING = "proceeding"  # (non-INVITE: TRYING merges into PROCEEDING here)
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


# (state, response class) -> next state, for client transactions. Class 1 = provisional,
# 2 = 2xx, 3 = 300-699.
_CLIENT_INVITE: Final[dict[tuple[ClientState, int], ClientState]] = {
    (ClientState.CALLING, 1): ClientState.PROCEEDING,
    (ClientState.CALLING, 2): ClientState.ACCEPTED,
    (ClientState.CALLING, 3): ClientState.COMPLETED,
    (ClientState.PROCEEDING, 1): ClientState.PROCEEDING,
    (ClientState.PROCEEDING, 2): ClientState.ACCEPTED,
    (ClientState.PROCEEDING, 3): ClientState.COMPLETED,
    (ClientState.ACCEPTED, 2): ClientState.ACCEPTED,
    (ClientState.COMPLETED, 3): ClientState.COMPLETED,
}
_CLIENT_NON_INVITE: Final[dict[tuple[ClientState, int], ClientState]] = {
    (ClientState.CALLING, 1): ClientState.PROCEEDING,
    (ClientState.CALLING, 2): ClientState.COMPLETED,
    (ClientState.CALLING, 3): ClientState.COMPLETED,
    (ClientState.PROCEEDING, 1): ClientState.PROCEEDING,
    (ClientState.PROCEEDING, 2): ClientState.COMPLETED,
    (ClientState.PROCEEDING, 3): ClientState.COMPLETED,
}


def _response_class(status: int) -> int:
    return 1 if status < 200 else 2 if status < 300 else 3


class ClientTransaction:
    """An INVITE or non-INVITE client transaction (RFC 3261 17.1)."""

    __slots__ = ("_interval", "_timeout_at", "deadline", "invite", "reliable", "state", "timers")

    def __init__(self, *, invite: bool, reliable: bool, now: float, timers: Timers) -> None:
        self.invite = invite
        self.reliable = reliable
        self.timers = timers
        self.state = ClientState.CALLING
        self._timeout_at = now + timers.transaction_timeout  # Timer B / F
        # Timer A / E: retransmissions only over unreliable transports.
        self._interval = timers.t1
        first = self._timeout_at if reliable else min(self._timeout_at, now + timers.t1)
        self.deadline: float | None = first

    @property
    def final(self) -> bool:
        return self.state in (ClientState.COMPLETED, ClientState.ACCEPTED, ClientState.TERMINATED)

    def receive_response(self, status: int, now: float) -> list[Action]:
        """Feed a response; returns what to do. Responses the state does not expect (late or
        stray) change nothing."""
        table = _CLIENT_INVITE if self.invite else _CLIENT_NON_INVITE
        cls = _response_class(status)
        following = table.get((self.state, cls))
        if self.state is ClientState.TERMINATED or following is None:
            return []  # late or stray response: absorbed, as RFC 3261 17.1.1.2 allows
        previous = self.state
        self.state = following
        actions: list[Action] = []
        if self.state is ClientState.PROCEEDING:
            if not self.invite and previous is ClientState.CALLING:
                self._interval = self.timers.t2  # Timer E continues at T2 once proceeding
            elif self.invite:
                # Timers A and B stop; how long to wait for a final is the proxy's Timer C.
                self.deadline = None
                self._timeout_at = float("inf")
        elif self.state is ClientState.COMPLETED:
            if self.invite:
                actions.append(Action.SEND_ACK)  # ACK for non-2xx is hop-by-hop, every time
            if previous is ClientState.COMPLETED:
                pass  # a retransmitted final: timers already run
            elif self.invite:
                # Timer D: absorb retransmitted finals for 32 s over UDP, 0 over TCP.
                self.deadline = now + (0.0 if self.reliable else 32.0)
            else:
                self.deadline = now + (0.0 if self.reliable else self.timers.t4)  # Timer K
        elif self.state is ClientState.ACCEPTED and previous is not ClientState.ACCEPTED:
            self.deadline = now + self.timers.transaction_timeout  # Timer M (RFC 6026)
        return actions

    def on_timer(self, now: float) -> list[Action]:
        """Fire whatever is due at ``now``."""
        if self.deadline is None or now < self.deadline:
            return []
        if self.state in (ClientState.CALLING, ClientState.PROCEEDING):
            if now >= self._timeout_at:
                self.state = ClientState.TERMINATED
                self.deadline = None
                return [Action.TIMEOUT, Action.TERMINATED]
            # Timer A doubles without cap; Timer E doubles up to T2.
            self._interval = (
                self._interval * 2 if self.invite else min(self._interval * 2, self.timers.t2)
            )
            self.deadline = min(self._timeout_at, now + self._interval)
            return [Action.RETRANSMIT]
        self.state = ClientState.TERMINATED
        self.deadline = None
        return [Action.TERMINATED]

    def terminate(self) -> None:
        """Drop the transaction (its branch was cancelled or the proxy gave up on it)."""
        self.state = ClientState.TERMINATED
        self.deadline = None


_SERVER_INVITE_SEND: Final[dict[tuple[ServerState, int], ServerState]] = {
    (ServerState.PROCEEDING, 1): ServerState.PROCEEDING,
    (ServerState.PROCEEDING, 2): ServerState.ACCEPTED,
    (ServerState.PROCEEDING, 3): ServerState.COMPLETED,
    (ServerState.ACCEPTED, 2): ServerState.ACCEPTED,
}
_SERVER_NON_INVITE_SEND: Final[dict[tuple[ServerState, int], ServerState]] = {
    (ServerState.PROCEEDING, 1): ServerState.PROCEEDING,
    (ServerState.PROCEEDING, 2): ServerState.COMPLETED,
    (ServerState.PROCEEDING, 3): ServerState.COMPLETED,
}


class ServerTransaction:
    """An INVITE or non-INVITE server transaction (RFC 3261 17.2)."""

    __slots__ = ("_give_up_at", "_interval", "deadline", "invite", "reliable", "state", "timers")

    def __init__(self, *, invite: bool, reliable: bool, timers: Timers) -> None:
        self.invite = invite
        self.reliable = reliable
        self.timers = timers
        self.state = ServerState.PROCEEDING
        self.deadline: float | None = None
        self._interval = timers.t1
        self._give_up_at = float("inf")

    def send_response(self, status: int, now: float) -> None:
        """Record that a response is being sent; raises if the state forbids it."""
        table = _SERVER_INVITE_SEND if self.invite else _SERVER_NON_INVITE_SEND
        following = table.get((self.state, _response_class(status)))
        if following is None:
            raise LocalProtocolError(f"cannot send {status} in state {self.state.value}")
        previous, self.state = self.state, following
        if self.state is ServerState.COMPLETED and previous is not ServerState.COMPLETED:
            if self.invite:
                # Timer G retransmits the final over UDP until the ACK; Timer H gives up.
                self._give_up_at = now + self.timers.transaction_timeout
                self.deadline = self._give_up_at if self.reliable else now + self.timers.t1
            else:
                self.deadline = now + (0.0 if self.reliable else self.timers.transaction_timeout)
        elif self.state is ServerState.ACCEPTED and previous is not ServerState.ACCEPTED:
            self.deadline = now + self.timers.transaction_timeout  # Timer L (RFC 6026)

    def receive_request(self) -> list[Action]:
        """A retransmission of the request: resend the last response if there is one."""
        if self.state in (ServerState.PROCEEDING, ServerState.COMPLETED):
            return [Action.RETRANSMIT]
        return []

    def receive_ack(self, now: float) -> None:
        """ACK for a non-2xx final: stop Timer G, wait Timer I for ACK retransmissions."""
        if self.invite and self.state is ServerState.COMPLETED:
            self.state = ServerState.CONFIRMED
            self.deadline = now + (0.0 if self.reliable else self.timers.t4)

    def terminate(self) -> None:
        """Forget the transaction: its owner answers retransmissions from a record of its own."""
        self.state = ServerState.TERMINATED
        self.deadline = None

    def on_timer(self, now: float) -> list[Action]:
        if self.deadline is None or now < self.deadline:
            return []
        if self.state is ServerState.COMPLETED and self.invite:
            if now >= self._give_up_at:
                self.state = ServerState.TERMINATED
                self.deadline = None
                return [Action.TIMEOUT, Action.TERMINATED]
            self._interval = min(self._interval * 2, self.timers.t2)
            self.deadline = min(self._give_up_at, now + self._interval)
            return [Action.RETRANSMIT]
        if self.state is ServerState.PROCEEDING:
            return []
        self.state = ServerState.TERMINATED
        self.deadline = None
        return [Action.TERMINATED]
