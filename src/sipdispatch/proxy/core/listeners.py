"""The proxy's sockets as the core sees them: ``Listener`` records and their lookups.

A listener is one socket (Kamailio's ``listen=``): the address it writes in Via, the one it
writes in Record-Route, its transport and its address family. Every message the core gets
names the listener it arrived on, and every ``Send`` the one it leaves from, so several
listeners per transport and per family serve side by side. ``Listeners`` answers the few
questions the core asks of them, each a dict lookup made once per settings: which one has this
id (a destination's ``socket=``), which one of a transport faces an address family, which ones
a Route naming this address means, and whether an address is the proxy's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipdispatch.sip.uri import format_host

__all__ = ["Address", "Listener", "Listeners", "family_of"]

Address = tuple[str, int]


def family_of(host: str) -> int:
    """The address family of ``host``: 6 for IPv6, 4 for IPv4, 0 for a name (either)."""
    if ":" in host:
        return 6
    return 4 if host.replace(".", "").isdigit() else 0


@dataclass(frozen=True, slots=True)
class Listener:
    """One socket the proxy receives on and sends from.

    A stream transport's listener (TCP, TLS, and WebSocket later) is the same record: the
    transport layer owns how a stream is opened; the core only names the listener.
    """

    #: the canonical ``proto:host:port`` it was bound as (what a destination's ``socket=`` names)
    id: str
    transport: str
    #: the address written in Via: where responses come back to this very socket
    local: Address
    #: the address written in Record-Route: the one the other side reaches (a Service address)
    advertise: Address
    #: 4 or 6: the family of the address it is bound to (0: worked out from ``local``)
    family: int = 0

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", family_of(self.local[0]) or 4)

    @property
    def record_route_key(self) -> tuple[str, Address]:
        """What tells two listeners apart in a Record-Route: transport and advertised address."""
        return self.transport, self.advertise


class Listeners:
    """Every listener of the proxy, in the order given (the first of a transport is its
    default), with the lookups the core makes; ``default`` is the advertised address of the
    whole proxy (``--advertise``), its own too."""

    __slots__ = ("_by_kind", "_first", "_naming", "_own", "all", "by_id", "default")

    def __init__(self, listeners: tuple[Listener, ...], default: Address) -> None:
        self.all = listeners
        self.default = default
        self.by_id = {x.id: x for x in listeners}
        by_kind: dict[tuple[str, int], list[Listener]] = {}
        naming: dict[tuple[str, Address], list[Listener]] = {}
        self._first: dict[str, Listener] = {}
        for listener in listeners:
            by_kind.setdefault((listener.transport, listener.family), []).append(listener)
            self._first.setdefault(listener.transport, listener)
            for address in {listener.advertise, listener.local}:
                naming.setdefault((listener.transport, address), []).append(listener)
        self._by_kind = {k: tuple(v) for k, v in by_kind.items()}
        self._naming = {k: tuple(v) for k, v in naming.items()}
        own = {default}
        own.update(address for x in listeners for address in (x.local, x.advertise))
        self._own = frozenset(own)

    def is_own(self, address: Address) -> bool:
        """Whether ``address`` is one of this proxy's (a listener's or an advertised one)."""
        return address in self._own

    def first(self, transport: str) -> Listener:
        """The default listener of ``transport``; one made up from the default advertised
        address if the proxy has none (callers that name only a transport)."""
        listener = self._first.get(transport)
        if listener is None:
            default = self.default
            listener = Listener(f"{transport}:{format_host(*default)}", transport, default, default)
            self._first[transport] = listener
        return listener

    def facing(
        self, transport: str, family: int, arrived: Listener | None = None
    ) -> Listener | None:
        """A listener of ``transport`` that reaches an address of ``family`` (0: a name,
        either family, IPv4 first), preferring ``arrived``; None if none does."""
        if (
            arrived is not None
            and arrived.transport == transport
            and (family in (0, arrived.family))
        ):
            return arrived
        if family:
            fitting = self._by_kind.get((transport, family))
            return fitting[0] if fitting else None
        fitting = self._by_kind.get((transport, 4)) or self._by_kind.get((transport, 6))
        return fitting[0] if fitting else None

    def naming(self, transport: str, address: Address) -> tuple[Listener, ...]:
        """The listeners of ``transport`` that advertise ``address`` (or listen on it)."""
        return self._naming.get((transport, address), ())
