"""Facts the proxy core reports to its owner (metrics, passive health marking, logs).

A destination is named by the `DestinationKey` its hop carries: the table target's own key
object, so the owner's look-ups by it match by identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipdispatch.dispatch.destinations import DestinationKey

__all__ = [
    "AliasOffered",
    "BranchAnswered",
    "BranchFailed",
    "BranchStarted",
    "CoreEvent",
    "DialogEnded",
    "HandlingFailed",
    "HashKeyMissing",
    "MessageRejected",
    "NoDestination",
    "ProbeCompleted",
    "ProbeReplyRejected",
    "RequestRefused",
    "RouteRefused",
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
    """A destination answered with a failure, or did not answer: ``replied`` False, ``status``
    408 for a timeout, 503 for a transport error. ``cancelled``: the branch had been cancelled
    (by the caller, by Timer C or by another fork's 2xx) before it ended."""

    destination: DestinationKey
    status: int
    call_id: str = ""
    replied: bool = True
    cancelled: bool = False

    def __init__(
        self,
        destination: DestinationKey,
        status: int,
        call_id: str = "",
        replied: bool = True,
        cancelled: bool = False,
    ) -> None:
        self.destination = destination
        self.status = status
        self.call_id = call_id
        self.replied = replied
        self.cancelled = cancelled


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


@dataclass(frozen=True, slots=True)
class ProbeReplyRejected:
    """A reply to a probe came from elsewhere than the probed destination: dropped."""

    destination: DestinationKey
    source: tuple[str, int]
    transport: str


@dataclass(slots=True, init=False, unsafe_hash=True)
class DialogEnded:
    """A BYE for ``call_id`` passed through: the dialog no longer loads its destination."""

    call_id: str

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id


@dataclass(frozen=True, slots=True)
class RouteRefused:
    """An in-dialog request's signed Route was refused: ``reason`` says why (see
    ``core.dialogs.REFUSALS``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """Routing answered a request itself with ``status`` instead of dispatching it."""

    cause: str  # route, untrusted-source, hairpin, unrouted, missing-hash-key
    route: str  # the route that refused it, "" when none did
    status: int
    method: str
    call_id: str
    source: tuple[str, int]


@dataclass(frozen=True, slots=True)
class HashKeyMissing:
    """A request lacked its set's hash key and was hashed by its Call-ID instead."""

    set_id: int
    call_id: str
    source: tuple[str, int]


@dataclass(frozen=True, slots=True)
class AliasOffered:
    """A request over a stream asked for its connection to be reused (RFC 5923 ``alias`` in
    its top Via): what is sent to ``alias`` (its sent-by) may go over the connection from
    ``source``. The transport's owner applies it; a live connection there keeps its place."""

    transport: str
    source: tuple[str, int]
    alias: tuple[str, int]


CoreEvent = (
    BranchStarted
    | BranchAnswered
    | BranchFailed
    | MessageRejected
    | NoDestination
    | ProbeCompleted
    | ProbeReplyRejected
    | DialogEnded
    | RouteRefused
    | HandlingFailed
    | RequestRefused
    | HashKeyMissing
    | AliasOffered
)
