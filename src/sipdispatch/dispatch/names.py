"""Destinations by DNS name: what to ask (RFC 3263), and the table the answers make.

Pure: the proxy's resolver (``proxy/resolver.py``) asks the questions this module poses and
hands back `Answer` values; `expand` turns a configured table plus those answers into a table
of addresses, the only kind the dispatch layer selects from and the core sends to.

RFC 3263, as far as a dispatcher needs it (no NAPTR: the transport is the URI's own):

- a name with an explicit port: its A and AAAA records, at that port;
- a name without a port: the SRV records of ``_sip._udp``, ``_sip._tcp`` or ``_sips._tcp``
  (by the URI's transport and scheme), then the A and AAAA records of each SRV target;
- no SRV records: A and AAAA at 5060 (5061 for TLS).

Each address is a target of its own (probed, failed over and shown separately), named after the
configured destination it came from (`Destination.name`). A target's priority is the
destination's priority minus the SRV priority (a lower SRV priority is preferred, a higher
sipdispatch priority comes first); its weight is the SRV weight, or the destination's weight for
A/AAAA answers. An address that two entries of a set reach is kept once, for the first.

An address that leaves a name's answer is not dropped at once: it drains (``DR``: in-dialog
requests of its calls still pass, no new dialogs) for `RefreshPolicy.drain_grace`, as an
endpoint gone does, since the proxy routes in-dialog requests only to table destinations.

`next_refresh` is the refresh schedule: when the shortest TTL of an answer runs out, clamped
to a floor and a ceiling, and a failed resolution is tried again after the floor.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from sipdispatch.dispatch import uris as _uris
from sipdispatch.dispatch.tableconfig import Destination, TableConfig
from sipdispatch.sip.uri import SipUri, parse_uri

__all__ = [
    "Answer",
    "NameQuery",
    "NameState",
    "NameStatus",
    "RefreshPolicy",
    "ResolvedAddress",
    "expand",
    "next_refresh",
    "queries",
    "query_for",
]

DEFAULT_PORT = 5060
DEFAULT_TLS_PORT = 5061


@dataclass(frozen=True, slots=True)
class NameQuery:
    """What to resolve for one named destination: ``name`` with ``port`` (A/AAAA only), or
    ``name`` without a port (SRV first, under ``service``)."""

    name: str
    port: int | None
    transport: str
    secure: bool  # a sips URI: SRV under _sips._tcp

    @property
    def service(self) -> str:
        """The SRV owner name (RFC 3263 4.2)."""
        if self.secure:
            return f"_sips._tcp.{self.name}"
        proto = "udp" if self.transport == "udp" else "tcp"
        return f"_sip._{proto}.{self.name}"

    @property
    def fallback_port(self) -> int:
        """The port of A/AAAA answers when there is no SRV record."""
        if self.port is not None:
            return self.port
        return DEFAULT_TLS_PORT if self.transport == "tls" else DEFAULT_PORT

    def __str__(self) -> str:
        return f"{self.name}:{self.port}" if self.port is not None else f"SRV {self.service}"


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """One address an answer gives: an IP literal and port, with SRV priority and weight
    (None for A/AAAA answers, which take the destination's own)."""

    host: str
    port: int
    srv_priority: int | None = None
    srv_weight: int | None = None


class NameState(Enum):
    PENDING = "pending"  # never asked yet
    RESOLVED = "resolved"
    STALE = "stale"  # the last good addresses, kept through a transient failure
    FAILED = "failed"  # no addresses: takes no calls


@dataclass(frozen=True, slots=True)
class Answer:
    """What the resolver last learned about a `NameQuery`."""

    addresses: tuple[ResolvedAddress, ...]
    #: when the shortest TTL of the answer (or of the last good one) runs out
    expires_at: float
    #: why the last resolution failed (``NXDOMAIN``, ``timeout``); "" after a good one
    error: str = ""
    #: when the addresses were last learned (0.0: never)
    resolved_at: float = 0.0

    @property
    def state(self) -> NameState:
        if not self.error:
            return NameState.RESOLVED
        return NameState.STALE if self.addresses else NameState.FAILED


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """Bounds on how often names are asked again, in seconds."""

    floor: float = 5.0  # never sooner (a TTL of 0 does not mean a query per call)
    ceiling: float = 3600.0  # never later (a week-long TTL still gets checked)
    #: how long past their expiry the last good addresses keep serving through transient
    #: failures (timeouts, SERVFAIL); an NXDOMAIN or an empty answer drops them at once
    max_stale: float = 300.0
    #: how long an address that left its name's answer stays in the table as draining (DR:
    #: in-dialog requests of its calls pass, no new dialogs), as an endpoint gone does
    drain_grace: float = 30.0


def next_refresh(answer: Answer, now: float, policy: RefreshPolicy) -> float:
    """When to ask again: at expiry (bounded by the floor and ceiling), or after the floor
    when the last resolution failed."""
    if answer.error:
        return now + policy.floor
    return now + min(max(answer.expires_at - now, policy.floor), policy.ceiling)


@dataclass(frozen=True, slots=True)
class NameStatus:
    """One named destination of one set, as the listing and the report show it."""

    set_id: int
    uri: str  # the destination as configured (as written: "sip:svc.example.com" says SRV)
    query: NameQuery
    state: NameState
    reason: str
    addresses: tuple[str, ...]  # the target URIs it became


def query_for(dest: Destination) -> NameQuery | None:
    """The question a destination needs answered; None when its host is an IP address."""
    try:
        ipaddress.ip_address(dest.host)
    except ValueError:
        pass
    else:
        return None
    uri = parse_uri(dest.uri)
    explicit = uri.port if isinstance(uri, SipUri) else None
    return NameQuery(dest.host, explicit, dest.transport, dest.key.split(":", 2)[1] == "sips")


def queries(config: TableConfig) -> set[NameQuery]:
    """Every question a table needs answered."""
    found = set()
    for set_config in config.sets:
        for dest in set_config.destinations:
            query = query_for(dest)
            if query is not None:
                found.add(query)
    return found


def _targets(
    dest: Destination, addresses: Iterable[ResolvedAddress], draining: bool = False
) -> list[Destination]:
    addresses = list(addresses)
    scheme = "sips" if dest.key.split(":", 2)[1] == "sips" else "sip"
    user = f"{dest.user}@" if dest.user is not None else ""
    # RFC 2782: weight 0 is "almost never" beside others; alone in its priority it is even.
    weighted = {a.srv_priority for a in addresses if a.srv_weight}
    targets = []
    for address in addresses:
        host = f"[{address.host}]" if ":" in address.host else address.host
        uri = f"{scheme}:{user}{host}:{address.port};transport={dest.transport}"
        weight = dest.weight
        if address.srv_weight is not None:
            weight = address.srv_weight or (0 if address.srv_priority in weighted else 1)
        targets.append(
            dataclasses.replace(
                dest,
                uri=uri,
                host=address.host,
                port=address.port,
                key=f"{dest.set_id}:{_uris.normalise(uri)}",
                priority=dest.priority - (address.srv_priority or 0),
                weight=weight,
                name=dest.uri,
                draining=dest.draining or draining,
            )
        )
    return targets


def expand(
    config: TableConfig,
    answers: Mapping[NameQuery, Answer],
    departed: Mapping[NameQuery, Iterable[ResolvedAddress]] | None = None,
) -> tuple[TableConfig, tuple[NameStatus, ...]]:
    """The table with every named destination replaced by its addresses, and the state of
    each name. A name without addresses (never resolved, or failed) contributes no target.
    ``departed``: addresses that left a name's answer, kept as draining targets (after the
    live ones) until their grace ends."""
    departed = departed or {}
    sets = []
    statuses = []
    for set_config in config.sets:
        destinations: list[Destination] = []
        seen: set[str] = set()
        for dest in set_config.destinations:
            query = query_for(dest)
            if query is None:
                expanded = [dest]
            else:
                answer = answers.get(query)
                expanded = [] if answer is None else _targets(dest, answer.addresses)
            kept = [t for t in expanded if t.key not in seen]
            seen.update(t.key for t in kept)
            destinations.extend(kept)
            if query is not None and query in departed:
                leaving = [t for t in _targets(dest, departed[query], True) if t.key not in seen]
                seen.update(t.key for t in leaving)
                destinations.extend(leaving)
            if query is not None:
                statuses.append(
                    NameStatus(
                        set_config.set_id,
                        dest.uri,
                        query,
                        NameState.PENDING if answer is None else answer.state,
                        "not resolved yet" if answer is None else answer.error,
                        tuple(t.key.partition(":")[2] for t in kept),
                    )
                )
        sets.append(dataclasses.replace(set_config, destinations=tuple(destinations)))
    return dataclasses.replace(config, sets=tuple(sets)), tuple(statuses)
