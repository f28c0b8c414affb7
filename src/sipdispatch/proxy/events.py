"""Facts the proxy core reports to its owner (metrics, passive health marking, logs).

A destination is named by the `DestinationKey` its hop carries: the table target's own key
object, so the owner's look-ups by it match by identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipdispatch.dispatch.destinations import DestinationKey

__all__ = [
    "BranchAnswered",
    "BranchFailed",
    "BranchStarted",
    "CoreEvent",
    "DialogEnded",
    "HandlingFailed",
    "MessageRejected",
    "NoDestination",
    "ProbeCompleted",
]


# Records made for every message are dataclasses with a hand-written __init__, not frozen:
# mypyc runs a frozen dataclass's generated __init__ interpreted (about 440 ns a record
# against 85 ns compiled). Treat them as immutable all the same.
@dataclass(slots=True, init=False, unsafe_hash=True)
class BranchAnswered:
    """A destination answered a forwarded request with 2xx after ``latency`` seconds."""

    destination: DestinationKey
    latency: float
    method: str = "INVITE"
    call_id: str = ""

    def __init__(
        self,
        destination: DestinationKey,
        latency: float,
        method: str = "INVITE",
        call_id: str = "",
    ) -> None:
        self.destination = destination
        self.latency = latency
        self.method = method
        self.call_id = call_id


@dataclass(slots=True, init=False, unsafe_hash=True)
class BranchStarted:
    """A request was sent to a destination (first attempt, failover or fork)."""

    destination: DestinationKey
    method: str
    call_id: str

    def __init__(self, destination: DestinationKey, method: str, call_id: str) -> None:
        self.destination = destination
        self.method = method
        self.call_id = call_id


@dataclass(slots=True, init=False, unsafe_hash=True)
class BranchFailed:
    """A destination answered with a failure, or timed out (``status`` 408)."""

    destination: DestinationKey
    status: int
    call_id: str = ""

    def __init__(self, destination: DestinationKey, status: int, call_id: str = "") -> None:
        self.destination = destination
        self.status = status
        self.call_id = call_id


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A malformed or unroutable message was answered with ``status`` or dropped."""

    status: int
    reason: str
    kind: str = "message"  # "request" when it parsed as one, else "message"
    call_id: str = "?"
    source: tuple[str, int] | None = None  # None for responses: their source is not checked
    #: the `MessageLimits` field it exceeded ("message-size", "via-count"...), else ""
    limit: str = ""
    #: the request policy rule that refused it ("method", "domain", "user-agent"...), else ""
    rule: str = ""


@dataclass(frozen=True, slots=True)
class HandlingFailed:
    """The core raised while handling a message or timer (a bug): the owner caught it, dropped
    what was being handled, and went on. ``stage`` says where: "message", "timer"..."""

    stage: str
    error: str


@dataclass(frozen=True, slots=True)
class NoDestination:
    """A request found no eligible destination and got a 503."""

    method: str


@dataclass(frozen=True, slots=True)
class ProbeCompleted:
    """An OPTIONS probe ended: ``status`` is the final reply, 408 when none came in time."""

    probe_id: str
    destination: DestinationKey
    status: int
    rtt: float | None
    retry_after: float | None = None


@dataclass(slots=True, init=False, unsafe_hash=True)
class DialogEnded:
    """A BYE for ``call_id`` passed through: the dialog no longer loads its destination."""

    call_id: str

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id


CoreEvent = (
    BranchStarted
    | BranchAnswered
    | BranchFailed
    | MessageRejected
    | NoDestination
    | ProbeCompleted
    | DialogEnded
    | HandlingFailed
)
