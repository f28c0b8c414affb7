"""The configuration of a destination table: destinations and sets.

`Destination` is one line of a `dispatcher.list` or one entry of a YAML set:
frozen, validated by `Destination.create`, identified across reloads by its
`key` (set id + normalised URI). `SetConfig` and `TableConfig` group them;
both loaders (`tablefile`, `configfile`) produce a `TableConfig`, and
`destinations.DestinationTable.build` turns it into a live table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

from sipdispatch.dispatch import algorithms as _algorithms
from sipdispatch.dispatch import keys as _keys
from sipdispatch.dispatch import routes as _routes
from sipdispatch.dispatch import uris as _uris
from sipdispatch.dispatch.tlsverify import TlsVerification, from_attrs

__all__ = [
    "DEFAULT_ALGORITHM",
    "FLAG_DISABLED",
    "FLAG_INACTIVE",
    "FLAG_NO_DNS",
    "FLAG_PROBING",
    "FLAG_TRYING",
    "Destination",
    "DestinationError",
    "SetConfig",
    "TableConfig",
    "TlsVerification",
]

DEFAULT_ALGORITHM = "round-robin"
#: what a hash-key set does with a request that lacks the key: hash its Call-ID instead
MISSING_KEY_DEFAULT: Final = "fallback"

# dispatcher.list flags (bit values as in Kamailio).
FLAG_INACTIVE = 1
FLAG_TRYING = 2
FLAG_DISABLED = 4
FLAG_PROBING = 8
FLAG_NO_DNS = 16  # Kamailio: do not resolve the host at load; accepted, no effect
FLAGS_KNOWN = 31
STATE_FLAGS = FLAG_INACTIVE | FLAG_TRYING | FLAG_PROBING  # set the initial health


_T = TypeVar("_T", int, str)


class DestinationError(ValueError):
    """A bad destination field; `field` names it (``uri``, ``attrs.weight``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _attr_int(attrs: Mapping[str, str], name: str, low: int) -> int | None:
    if name not in attrs:
        return None
    text = attrs[name].strip()
    if not text.lstrip("-").isdigit() or int(text) < low:
        raise DestinationError(f"attrs.{name}", f"{text!r} is not an integer >= {low}")
    return int(text)


def _pick(name: str, explicit: _T | None, from_attrs: _T | None) -> _T | None:
    if explicit is not None and from_attrs is not None and explicit != from_attrs:
        raise DestinationError(name, "given both as a field and in attrs, with different values")
    return explicit if explicit is not None else from_attrs


@dataclass(frozen=True, slots=True)
class Destination:
    """One destination of one set, as configured. Build with `create`."""

    set_id: int
    uri: str
    host: str
    port: int
    transport: str
    user: str | None
    key: str  # set id + normalised URI: the identity across reloads
    flags: int = 0
    priority: int = 0
    attrs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    weight: int = 1
    rweight: int | None = None  # None: relative weight follows `weight`
    duid: str | None = None
    maxload: int = 0  # 0: no limit
    socket: str | None = None
    ping_from: str | None = None
    disabled: bool = False
    draining: bool = False
    #: for an address resolved from a DNS name: the named destination it came from
    #: (canonical URI); None for destinations configured by address
    name: str | None = None

    @classmethod
    def create(
        cls,
        set_id: int,
        uri: str,
        flags: int = 0,
        priority: int = 0,
        attrs: Mapping[str, str] | None = None,
        *,
        weight: int | None = None,
        rweight: int | None = None,
        duid: str | None = None,
        maxload: int | None = None,
        socket: str | None = None,
        ping_from: str | None = None,
        disabled: bool = False,
        draining: bool = False,
    ) -> Destination:
        """Validate and build; known attrs (`weight=`, `duid=`, ...) are parsed.

        Fields may be given as keywords or in `attrs` (as in a
        `dispatcher.list`); giving both with different values is an error.
        Weight defaults to 1 (Kamailio: 0 means "no weight"), so a set
        without weights is spread evenly by the weight algorithm.
        """
        try:
            parsed = _uris.parse_sip_uri(uri)
        except ValueError as exc:
            raise DestinationError("uri", str(exc)) from None
        if set_id < 0:
            raise DestinationError("setid", f"{set_id} is not a set id (an integer >= 0)")
        if flags & ~FLAGS_KNOWN or flags < 0:
            raise DestinationError("flags", f"{flags} has unknown bits (known: 1 2 4 8 16)")
        raw = dict(attrs or {})
        weight = _pick("weight", weight, _attr_int(raw, "weight", 0))
        rweight = _pick("rweight", rweight, _attr_int(raw, "rweight", 0))
        maxload = _pick("maxload", maxload, _attr_int(raw, "maxload", 0))
        duid = _pick("duid", duid, raw.get("duid") or None)
        socket = _pick("socket", socket, raw.get("socket") or None)
        ping_from = _pick("ping_from", ping_from, raw.get("ping_from") or None)
        for name, value in (("weight", weight), ("rweight", rweight), ("maxload", maxload)):
            if value is not None and value < 0:
                raise DestinationError(name, f"{value} is negative")
        if socket is not None:
            try:
                socket = str(_uris.parse_socket(socket))
            except ValueError as exc:
                raise DestinationError("attrs.socket", str(exc)) from None
        if ping_from is not None:
            try:
                _uris.parse_sip_uri(ping_from)
            except ValueError as exc:
                raise DestinationError("attrs.ping_from", str(exc)) from None
        _, bad = from_attrs(raw, None)
        if bad:
            name, _, reason = bad.partition(": ")
            raise DestinationError(f"attrs.{name}", reason)
        return cls(
            set_id=set_id,
            uri=uri,
            host=parsed.host_address,
            port=parsed.default_port(),  # always the URI's: parse_sip_uri fills it in
            transport=parsed.transport,
            user=parsed.user,
            key=f"{set_id}:{parsed}",
            flags=flags,
            priority=priority,
            attrs=MappingProxyType(raw),
            weight=1 if weight is None else weight,
            rweight=rweight,
            duid=duid,
            maxload=maxload or 0,
            socket=socket,
            ping_from=ping_from,
            disabled=disabled or bool(flags & FLAG_DISABLED),
            draining=draining,
        )

    @property
    def health_identity(self) -> tuple[str, str | None]:
        """What learned health is about: the address and the path to it."""
        return self.key, self.socket


@dataclass(frozen=True, slots=True)
class SetConfig:
    set_id: int
    destinations: tuple[Destination, ...]
    algorithm: str = DEFAULT_ALGORITHM
    hash_key: str | None = None
    #: "fallback" (hash the Call-ID) or "reject" (refuse with 400), for algorithm hash-key
    missing_hash_key: str = MISSING_KEY_DEFAULT
    #: how the set's TLS destinations are verified; None: `TlsVerification()`'s defaults
    tls: TlsVerification | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", _algorithms.resolve(self.algorithm))
        if self.missing_hash_key not in ("fallback", "reject"):
            raise ValueError(f"set {self.set_id}: missing_hash_key is fallback or reject")
        if self.algorithm == "hash-key" and not self.hash_key:
            raise ValueError(f"set {self.set_id}: algorithm hash-key needs a hash key")
        if self.hash_key is not None:
            _keys.parse(self.hash_key)
        seen: set[str] = set()
        for dest in self.destinations:
            if dest.set_id != self.set_id:
                raise ValueError(f"destination {dest.uri} belongs to set {dest.set_id}")
            if dest.key in seen:
                raise ValueError(f"set {self.set_id}: {dest.uri} is listed twice")
            seen.add(dest.key)


@dataclass(frozen=True, slots=True)
class TableConfig:
    """Everything a table is built from; produced by both loaders."""

    sets: tuple[SetConfig, ...]
    default_set: int | None = None
    #: which set takes a request; None: the default set takes every one
    routing: _routes.RoutingConfig | None = None

    def __post_init__(self) -> None:
        ids = [s.set_id for s in self.sets]
        if len(ids) != len(set(ids)):
            raise ValueError(f"set ids are not unique: {ids}")
        if self.default_set is not None and self.default_set not in ids:
            raise ValueError(f"default set {self.default_set} is not defined")
        for route in self.routing.routes if self.routing is not None else ():
            named = (
                route.match.member_sets
                if route.set_id is None
                else (route.set_id, *route.match.member_sets)
            )
            for set_id in named:
                if set_id not in ids:
                    raise ValueError(f"route {route.name!r}: set {set_id} is not defined")
