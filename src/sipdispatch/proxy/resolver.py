"""Asks DNS the questions of `dispatch.names` without blocking the event loop.

Built on dnspython's ``dns.asyncresolver`` (2.x): maintained, pure Python (no C library to
build, so the mypyc image and a fresh machine install it from PyPI alike), asyncio-native,
gives each record set's TTL (which ``loop.getaddrinfo`` hides, and which the refresh needs),
asks SRV as readily as A/AAAA, reads the system's ``resolv.conf`` or takes servers given, and
tells NXDOMAIN, an empty answer, SERVFAIL and a timeout apart. aiodns (c-ares) would do as
well, at the cost of a compiled dependency.

`Resolver.resolve` never raises for anything DNS answers or fails to answer: every outcome is
an `Outcome`, with the reason in ``error`` (``NXDOMAIN``, ``no address``, ``timeout``,
``SERVFAIL``...). `Outcome.definitive` tells a name that does not exist (the zone says so)
from a failure to find out (the previous addresses then keep serving, see ``namebook.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.name
import dns.nameserver
import dns.resolver

from sipdispatch.dispatch import names

__all__ = ["Outcome", "Resolver", "parse_server"]

log = logging.getLogger(__name__)

#: the TTL assumed for a negative answer, whatever the SOA says: the refresh floor bounds it
_NEGATIVE_TTL = 0.0


def parse_server(text: str) -> tuple[str, int]:
    """``IP`` or ``IP:PORT`` or ``[IPv6]:PORT`` of a DNS server; raises ``ValueError``."""
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not IP[:PORT]")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    if not dns.inet.is_address(host):
        raise ValueError(f"{text!r}: {host!r} is not an IP address")
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r} has an invalid port {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One resolution: addresses with the shortest TTL, or why there are none."""

    addresses: tuple[names.ResolvedAddress, ...]
    ttl: float
    error: str = ""
    #: the zone says so (NXDOMAIN, no record): not worth serving the old addresses
    definitive: bool = False


class _ResolutionError(Exception):
    def __init__(self, reason: str, definitive: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.definitive = definitive


class Resolver:
    """RFC 3263 resolution over ``dns.asyncresolver``; ``servers`` empty: resolv.conf."""

    def __init__(self, servers: Sequence[tuple[str, int]] = (), timeout: float = 2.0) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _get(self) -> dns.asyncresolver.Resolver:
        # Made on first use: reading resolv.conf is I/O, and a table without names needs none.
        if self._resolver is None:
            if self.servers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(host, port) for host, port in self.servers
                ]
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = self.timeout
            resolver.cache = None  # the refresh schedule follows TTLs itself
            self._resolver = resolver
        return self._resolver

    async def resolve(self, query: names.NameQuery) -> Outcome:
        try:
            resolver = self._get()
        except Exception as exc:  # no resolv.conf, unreadable: a failure of this name
            return Outcome((), _NEGATIVE_TTL, f"no DNS configuration: {exc}")
        try:
            if query.port is None:
                srv = await self._srv(resolver, query)
                if srv is not None:
                    return srv
            addresses, ttl = await self._addresses(resolver, query.name, query.fallback_port)
        except _ResolutionError as failure:
            return Outcome((), _NEGATIVE_TTL, failure.reason, failure.definitive)
        return Outcome(tuple(addresses), ttl)

    async def _srv(
        self, resolver: dns.asyncresolver.Resolver, query: names.NameQuery
    ) -> Outcome | None:
        """The SRV step; None when there are no SRV records (then A/AAAA at the default port)."""
        try:
            answer = await resolver.resolve(query.service, "SRV", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except Exception as exc:
            raise _failure(exc) from None
        if answer.rrset is None or not len(answer.rrset):
            return None
        records = sorted(answer.rrset, key=lambda r: (r.priority, -r.weight))
        if len(records) == 1 and records[0].target == dns.name.root:
            # RFC 2782: "." says the service is decidedly not available here.
            raise _ResolutionError("SRV says no service (target '.')", True)
        ttl = float(answer.rrset.ttl)
        found: list[names.ResolvedAddress] = []
        reasons = []
        targets = await asyncio.gather(
            *(self._addresses(resolver, r.target.to_text(), r.port) for r in records),
            return_exceptions=True,
        )
        for record, result in zip(records, targets, strict=True):
            if isinstance(result, _ResolutionError):
                reasons.append(f"{record.target}: {result.reason}")
                continue
            if isinstance(result, BaseException):
                raise result
            addresses, target_ttl = result
            ttl = min(ttl, target_ttl)
            found.extend(
                names.ResolvedAddress(a.host, a.port, record.priority, record.weight)
                for a in addresses
            )
        if not found:
            raise _ResolutionError(
                "; ".join(reasons),
                all(isinstance(r, _ResolutionError) and r.definitive for r in targets),
            )
        return Outcome(tuple(found), ttl)

    async def _addresses(
        self, resolver: dns.asyncresolver.Resolver, name: str, port: int
    ) -> tuple[list[names.ResolvedAddress], float]:
        """A and AAAA of ``name`` (asked together); raises `_ResolutionError` for none."""
        results = await asyncio.gather(
            *(resolver.resolve(name, kind, raise_on_no_answer=False) for kind in ("A", "AAAA")),
            return_exceptions=True,
        )
        found: list[names.ResolvedAddress] = []
        ttl: float | None = None
        failures = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failures.append(_failure(result))
                continue
            if result.rrset is None:
                continue
            ttl = float(result.rrset.ttl) if ttl is None else min(ttl, result.rrset.ttl)
            found.extend(names.ResolvedAddress(r.address, port) for r in result.rrset)
        if found and ttl is not None:
            return found, ttl
        if failures:
            # NXDOMAIN for one type is NXDOMAIN for both; otherwise the first failure says why.
            raise failures[0]
        raise _ResolutionError(f"{name.rstrip('.')}: no address (no A or AAAA record)", True)


def _failure(exc: Exception) -> _ResolutionError:
    """The reason an exception of dnspython's stands for, and whether it is the zone's word."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return _ResolutionError("NXDOMAIN", True)
    if isinstance(exc, dns.resolver.LifetimeTimeout | dns.exception.Timeout):
        return _ResolutionError("timeout", False)
    if isinstance(exc, dns.resolver.NoNameservers):
        # every server failed: SERVFAIL, REFUSED... their own words are in the message
        # (server, tcp, port, error, response) each; the error is an rcode's text or an exception
        said = {
            e[3] if isinstance(e[3], str) else type(e[3]).__name__
            for e in exc.kwargs.get("errors", [])
            if len(e) >= 4
        }
        return _ResolutionError("/".join(sorted(said)) or "no server answered", False)
    return _ResolutionError(f"{type(exc).__name__}: {exc}", False)
