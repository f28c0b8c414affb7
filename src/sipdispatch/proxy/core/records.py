"""What the core and its owner hand each other: settings, hops, selections and sends.

Plain values; the components that move them live beside this module. ``RequestSelection`` is the
dispatch layer's view of a request (``dispatch.context.SelectionContext``): hash algorithms need
one or two fields of a request, so each is parsed only when an algorithm asks for it, and
round-robin pays for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from sipdispatch.dispatch import codes
from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.dispatch.routes import Refusal
from sipdispatch.proxy.core.admission import AdmissionSettings
from sipdispatch.proxy.core.listeners import Address, Listener, Listeners, family_of
from sipdispatch.proxy.core.policy import RequestPolicy
from sipdispatch.sip import grammar, values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.limits import MessageLimits
from sipdispatch.sip.message import Request, header_key
from sipdispatch.sip.transaction import Timers
from sipdispatch.sip.uri import SipUri, format_host, parse_uri

__all__ = [
    "Address",
    "CoreSettings",
    "Hop",
    "Listener",
    "RequestSelection",
    "Selection",
    "Selector",
    "Send",
    "family_of",
]


# Records made for every message are dataclasses with a hand-written __init__, not frozen:
# mypyc runs a frozen dataclass's generated __init__ interpreted (about 440 ns a record
# against 85 ns compiled). Treat them as immutable all the same.
@dataclass(slots=True, init=False, unsafe_hash=True)
class Send:
    """One message to put on the wire."""

    transport: str  # "udp" or "tcp"
    address: Address
    data: bytes
    #: over a stream: where to send instead when no connection to ``address`` is open (RFC
    #: 3261 18.2.2 for a response, the Request-URI for a request meant for a caller's flow)
    fallback: Address | None
    #: the listener to send from; None: any of the transport and the address's family
    listener: Listener | None

    def __init__(
        self,
        transport: str,
        address: Address,
        data: bytes,
        fallback: Address | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.transport = transport
        self.address = address
        self.data = data
        self.fallback = fallback
        self.listener = listener


@dataclass(slots=True, init=False, unsafe_hash=True)
class Hop:
    """A destination to try, as the dispatcher chose it."""

    host: str  # without IPv6 brackets
    port: int
    transport: str
    #: the destination's identity (its table target's own key), which every event names
    key: DestinationKey
    #: the listener (its ``Listener.id``) the destination is reached from (``socket=``)
    socket: str | None
    #: its address family (``family_of``), worked out once
    family: int

    def __init__(
        self,
        host: str,
        port: int,
        transport: str,
        key: DestinationKey,
        socket: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.transport = transport
        self.key = key
        self.socket = socket
        self.family = family_of(host)


class RequestSelection:
    """Implements ``SelectionContext`` and ``RoutingContext`` lazily over a parsed request."""

    def __init__(self, request: Request, source_host: str = "") -> None:
        self.request = request
        #: the address the request came from (the packet's)
        self.source_host = source_host
        #: the destination that challenged this Call-ID (401/407): to be tried first
        self.affinity: DestinationKey | None = None

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def call_id(self) -> str:
        return self.request.call_id

    @cached_property
    def from_uri(self) -> str:
        return _uri_of(self.request.headers.get("from"))

    @cached_property
    def to_uri(self) -> str:
        return _uri_of(self.request.headers.get("to"))

    @property
    def request_uri(self) -> str:
        return self.request.uri

    @cached_property
    def _sip_request_uri(self) -> SipUri | None:
        uri = parse_uri(self.request.uri)
        return uri if isinstance(uri, SipUri) else None

    @property
    def request_uri_user(self) -> str | None:
        uri = self._sip_request_uri
        return None if uri is None else uri.user

    @property
    def request_uri_host(self) -> str | None:
        uri = self._sip_request_uri
        return None if uri is None else uri.host_address

    @cached_property
    def auth_username(self) -> str | None:
        headers = self.request.headers
        value = headers.get("authorization") or headers.get("proxy-authorization")
        if value is None:
            return None
        match = grammar.DIGEST_USERNAME.search(value)
        if match is None:
            return None
        return match.group(1) if match.group(1) is not None else match.group(2)

    def header(self, name: str) -> str | None:
        return self.request.headers.get(header_key(name))


def _uri_of(value: str | None) -> str:
    if not value:
        return ""
    try:
        return values.parse_name_addr(value).uri_text
    except RemoteProtocolError:
        return value


@dataclass(slots=True, init=False)
class Selection:
    """The dispatcher's answer for one new request (one per request: a hand-written
    ``__init__``, see above; treat it as immutable)."""

    #: ordered candidates: first = chosen, then the failover order (``ds_next_dst``)
    hops: Sequence[Hop]
    #: try every candidate at once (algorithm 12, parallel forking); first 2xx wins
    parallel: bool
    #: the request is answered by the proxy instead (a route, an untrusted source, a hairpin)
    refusal: Refusal | None
    #: the set whose hash key the request lacked (hashed by Call-ID instead), if any
    key_missing: int | None

    def __init__(
        self,
        hops: Sequence[Hop],
        parallel: bool = False,
        refusal: Refusal | None = None,
        key_missing: int | None = None,
    ) -> None:
        self.hops = hops
        self.parallel = parallel
        self.refusal = refusal
        self.key_missing = key_missing


Selector = Callable[[RequestSelection], Selection]


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """What the core needs to know about itself."""

    #: the first listener's own address per transport, written in Via (responses come back
    #: here): the listeners when ``listeners`` is empty
    local: dict[str, Address]
    #: the address callers reach the service at, written in Record-Route (any replica answers):
    #: the default of every listener that advertises none of its own
    advertise: Address
    timers: Timers = field(default_factory=Timers)
    #: final responses that make an INVITE move on to the next destination
    failover_codes: frozenset[int] = codes.failover_statuses(
        codes.FAILOVER_CODES, codes.FAILOVER_ON_TIMEOUT
    )
    #: no response at all from a destination within this time counts as a 408 (fr_timer)
    answer_timeout: float = 5.0
    #: whether such a timeout moves on to the next destination (failover.onTimeout)
    failover_on_timeout: bool = codes.FAILOVER_ON_TIMEOUT
    #: ringing without a final for this long cancels the branch (Timer C, fr_inv_timer)
    ringing_timeout: float = 180.0
    #: destinations tried for one request (failover.maxAttempts)
    max_attempts: int = codes.MAX_ATTEMPTS
    #: how long a signed Record-Route is honoured: longer than any call may last
    dialog_lifetime: float = 12 * 3600.0
    #: what to add to ``now`` for Unix time: routes expire by the clock every replica shares
    clock_offset: float = 0.0
    #: bounds on one message's size, header lines and lists, checked before it is parsed
    limits: MessageLimits = field(default_factory=MessageLimits)
    #: how long the destination that answered 401/407 stays first for the Call-ID's retry
    challenge_affinity_ttl: float = 32.0
    #: Call-IDs remembered for that at most (the oldest go first); 0 turns it off
    challenge_affinity_size: int = 10_000
    #: a header naming where each request came from (``udp:192.0.2.7:5060``), added to the
    #: requests the proxy forwards after removing any copy that arrived; None: off
    source_header: str | None = None
    #: per-source request rates and the cap on live transactions
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    #: which requests are refused however well formed (``policy.OFF``: none)
    policy: RequestPolicy = field(default_factory=RequestPolicy)
    #: every socket of the proxy, the first of each transport its default; empty: one per
    #: entry of ``local``, advertising ``advertise``
    listeners: tuple[Listener, ...] = ()
    #: the lookups over them, made from ``listeners``
    sockets: Listeners = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        listeners = self.listeners or tuple(
            Listener(
                f"{transport}:{format_host(*local)}",
                transport,
                local,
                # TLS has a port of its own: the advertised host, on the TLS listener's port
                (self.advertise[0], local[1]) if transport == "tls" else self.advertise,
            )
            for transport, local in self.local.items()
        )
        object.__setattr__(self, "listeners", listeners)
        object.__setattr__(self, "sockets", Listeners(listeners, self.advertise))

    def is_local(self, uri: SipUri) -> bool:
        """Whether ``uri`` names this proxy: an advertised address or a listener's."""
        return self.sockets.is_own((uri.host_address, uri.default_port()))

    def outbound(self, hop: Hop, arrived: Listener | None = None) -> Listener | None:
        """The listener to reach ``hop`` from: its ``socket=``; else one of its transport and
        address family, the one the request ``arrived`` on if it is such; None if none fits."""
        sockets = self.sockets
        if hop.socket is not None:
            return sockets.by_id.get(hop.socket)
        return sockets.facing(hop.transport, hop.family, arrived)
