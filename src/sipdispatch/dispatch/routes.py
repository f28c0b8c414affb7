"""Routes: which set takes a request, from the request and the address it came from.

The declarative form of the script around Kamailio's ``ds_select_dst(set, alg)`` and
``ds_is_from_list()``. A `Route` is a `Match` and an action (a set, or a `Refusal`); the
`RouteTable` tries them in order and the first that matches decides. Built once per table
(`RouteTable.compile`), it answers per request without allocating: regexes are compiled at
load, and what a source address is (which routes trust it, which sets it belongs to) is worked
out once per address and kept in a bounded cache.

Rules the table holds whatever the routes say:

- When any route matches on ``source``, those sources are the trusted ones: a request from
  any other address is refused (403) before a route is tried.
- No hairpin: a route does not send a request from a member of a set back into that set,
  unless the same route names that set in its ``source`` (``source: ["set:1"]``, ``set: 1``).
  Such a route is passed over, and the next ones tried. The default set is not taken by its
  own members either.
- A request no route takes goes to the default set (``defaultSet``, else the lowest id), or is
  refused when the configuration says so (``unrouted``).

Members of a set are matched by IP address, whatever the port: a gateway's calls over TCP come
from ephemeral ports. Destinations named by DNS host name are not members (nothing is resolved
here).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "HAIRPIN",
    "MISSING_HASH_KEY",
    "UNTRUSTED",
    "IPNetwork",
    "Match",
    "Refusal",
    "Route",
    "RouteTable",
    "RoutingConfig",
    "RoutingContext",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: how many source addresses the table remembers what it knows about (then it starts over)
SOURCE_CACHE_SIZE: Final = 4096


class RoutingContext(Protocol):
    """What routes read from a request (the proxy core implements it over a parsed request)."""

    @property
    def source_host(self) -> str:
        """The IP address the request came from (the packet's, not what Via claims)."""
        ...

    @property
    def method(self) -> str: ...

    @property
    def request_uri_user(self) -> str | None: ...

    @property
    def request_uri_host(self) -> str | None: ...

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request answered by the proxy itself instead of being dispatched."""

    status: int
    reason: str  # the SIP reason phrase
    #: why, the label of the refusal counter: route, untrusted-source, hairpin, unrouted,
    #: missing-hash-key
    cause: str
    route: str = ""  # the route that refused ("" when no route did)


UNTRUSTED: Final = Refusal(403, "Forbidden", "untrusted-source")
HAIRPIN: Final = Refusal(403, "Forbidden", "hairpin")
MISSING_HASH_KEY: Final = Refusal(400, "Missing Hash Key", "missing-hash-key")


@dataclass(frozen=True, slots=True)
class Match:
    """What a request must be for a route to take it; every given part must hold."""

    networks: tuple[IPNetwork, ...] = ()
    #: ``set:N`` sources: the members of these sets
    member_sets: tuple[int, ...] = ()
    methods: frozenset[str] = frozenset()
    request_user: re.Pattern[str] | None = None  # searched, so anchor it with ^ and $
    request_host: str | None = None  # compared without case
    header: tuple[str, re.Pattern[str]] | None = None

    @property
    def has_source(self) -> bool:
        return bool(self.networks or self.member_sets)


@dataclass(frozen=True, slots=True)
class Route:
    """One rule: a match, then a set to dispatch to or a refusal."""

    name: str
    match: Match
    set_id: int | None = None
    refusal: Refusal | None = None

    def __post_init__(self) -> None:
        if (self.set_id is None) == (self.refusal is None):
            raise ValueError(f"route {self.name!r}: give either a set or a refusal")


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The routes of a table, in order, and what happens to a request none of them takes."""

    routes: tuple[Route, ...] = ()
    #: refuse a request no route takes; None: the default set takes it
    unrouted: Refusal | None = None


class _Source:
    """What one source address is to the table: routes that trust it, sets it belongs to."""

    __slots__ = ("member_of", "routes", "trusted")

    def __init__(self, routes: int, member_of: frozenset[int], trusted: bool) -> None:
        self.routes: Final = routes  # bit i: route i's source match holds
        self.member_of: Final = member_of
        self.trusted: Final = trusted


_NOBODY: Final = _Source(0, frozenset(), False)


class RouteTable:
    """The routes of one table, ready to decide (`decide`). Build with `compile`."""

    def __init__(
        self,
        config: RoutingConfig,
        members: Mapping[int, frozenset[IPAddress]],
        default_set: int | None,
    ) -> None:
        self.config = config
        self.default_set = default_set
        self._members = dict(members)
        self._trusting = any(route.match.has_source for route in config.routes)
        # (bit, route, source-checked, hairpin allowed): unpacked without allocating
        self._steps = tuple(
            (
                1 << i,
                route,
                route.match.has_source,
                route.set_id is not None and route.set_id in route.match.member_sets,
            )
            for i, route in enumerate(config.routes)
        )
        self._sources: dict[str, _Source] = {}

    @classmethod
    def compile(
        cls,
        config: RoutingConfig,
        member_hosts: Mapping[int, list[str]],
        default_set: int | None,
    ) -> RouteTable:
        """The table for ``config``, whose ``set:N`` sources are the IP addresses among
        ``member_hosts[N]`` (host names are left out)."""
        members: dict[int, frozenset[IPAddress]] = {}
        for set_id, hosts in member_hosts.items():
            addresses = set()
            for host in hosts:
                address = _address(host)
                if address is not None:
                    addresses.add(address)
            members[set_id] = frozenset(addresses)
        return cls(config, members, default_set)

    def decide(self, ctx: RoutingContext) -> int | Refusal:
        """The set that takes the request, or how it is refused."""
        source = self._source(ctx.source_host)
        if self._trusting and not source.trusted:
            return UNTRUSTED
        for bit, route, by_source, hairpin_allowed in self._steps:
            if by_source and not source.routes & bit:
                continue
            if not _holds(route.match, ctx):
                continue
            refusal = route.refusal
            if refusal is not None:
                return refusal
            set_id = route.set_id
            assert set_id is not None
            if set_id in source.member_of and not hairpin_allowed:
                continue  # never back into the set it came from
            return set_id
        if self.config.unrouted is not None:
            return self.config.unrouted
        default = self.default_set
        if default is None:
            return -1  # a table without sets: nothing to dispatch to
        return HAIRPIN if default in source.member_of else default

    def _source(self, host: str) -> _Source:
        known = self._sources.get(host)
        if known is not None:
            return known
        address = _address(host)
        if address is None:
            source = _NOBODY
        else:
            member_of = frozenset(s for s, hosts in self._members.items() if address in hosts)
            bits = 0
            for bit, route, by_source, _ in self._steps:
                if by_source and _source_holds(route.match, address, member_of):
                    bits |= bit
            source = _Source(bits, member_of, bits != 0)
        if len(self._sources) >= SOURCE_CACHE_SIZE:
            self._sources.clear()  # a flood of addresses costs a parse each, never memory
        self._sources[host] = source
        return source


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def _source_holds(match: Match, address: IPAddress, member_of: frozenset[int]) -> bool:
    if any(address in network for network in match.networks):
        return True
    return any(set_id in member_of for set_id in match.member_sets)


def _holds(match: Match, ctx: RoutingContext) -> bool:
    """The request parts of ``match`` (its source is checked by the caller)."""
    if match.methods and ctx.method not in match.methods:
        return False
    pattern = match.request_user
    if pattern is not None:
        user = ctx.request_uri_user
        if user is None or pattern.search(user) is None:
            return False
    if match.request_host is not None:
        host = ctx.request_uri_host
        if host is None or host.lower() != match.request_host:
            return False
    if match.header is not None:
        name, value_pattern = match.header
        value = ctx.header(name)
        if value is None or value_pattern.search(value) is None:
            return False
    return True
