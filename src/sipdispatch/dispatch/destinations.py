"""The live destination table: sets of targets, selection, reloads.

Configuration (`Destination`, `SetConfig`, `TableConfig`) lives in
`tableconfig` and is re-exported here. The table pairs each destination with
a mutable `Runtime` (health, latency, active calls) in a `Target`.

A `DestinationTable` is an immutable snapshot; a reload builds a new one and
the proxy swaps it in. `DestinationTable.build` carries every runtime record
across by destination key (set id + normalised URI), so a reload resets
nothing that did not change: learned health, latency and call counts stay,
an admin `set-state` stays, the selector (its round-robin cursor, its slot
table) stays when the set's algorithm did not change. A destination whose
address changed (URI or send socket) is a new destination with fresh health.

Disabled in the configuration always wins (DX after every build); a
destination enabled in the configuration keeps an admin DX from `set-state`
unless the configuration itself just changed from disabled to enabled.
Draining (`DR`, an endpoint terminating) follows the same rule.

Selection (`DestinationTable.select`) returns the ordered failover list over
destinations eligible for new dialogs: states AP, AX, TP, TX (never IP, IX,
DX, DR). An unknown set id raises `UnknownSetError`; a known set with no
eligible destination returns an empty list.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from sipdispatch.dispatch import algorithms as _algorithms
from sipdispatch.dispatch import context as _context
from sipdispatch.dispatch import health as _health
from sipdispatch.dispatch import keys as _keys
from sipdispatch.dispatch import names as _names
from sipdispatch.dispatch import routes as _routes
from sipdispatch.dispatch import tableconfig as _tableconfig
from sipdispatch.dispatch import uris as _uris
from sipdispatch.dispatch.tableconfig import (
    DEFAULT_ALGORITHM,
    Destination,
    DestinationError,
    SetConfig,
    TableConfig,
)

__all__ = [
    "DEFAULT_ALGORITHM",
    "Destination",
    "DestinationError",
    "DestinationKey",
    "DestinationSet",
    "DestinationTable",
    "Runtime",
    "SetConfig",
    "TableConfig",
    "Target",
    "TargetIndex",
    "UnknownDestinationError",
    "UnknownSetError",
]


class DestinationKey:
    """A destination's identity: its set and its normalised URI.

    Health, latency and call counts belong to it and are carried across reloads by it; hops,
    the core's events, the control API, the reports and the prober name destinations by it.
    Each table target carries one (`Target.identity`), made once per reload, so the look-ups
    every event makes find it by identity. ``str()`` gives the ``set:uri`` spelling of
    `Destination.key`. Immutable; keys sort by set, then URI.
    """

    # Hand-written, not a frozen dataclass: its hash is computed once, not from a fresh tuple
    # at every dict look-up, and mypyc compiles these methods (a dataclass's are interpreted).
    __slots__ = ("_hash", "set_id", "uri")

    def __init__(self, set_id: int, uri: str) -> None:
        self.set_id: Final = set_id
        self.uri: Final = uri
        self._hash: Final = hash((set_id, uri))

    @classmethod
    def of(cls, dest: Destination) -> DestinationKey:
        # Destination.key is "<set id>:<normalised URI>", built by Destination.create.
        return cls(dest.set_id, dest.key.partition(":")[2])

    @classmethod
    def parse(cls, set_id: int, uri: str) -> DestinationKey:
        """The key of ``uri`` in a set, however the URI is spelled; raises ``ValueError``."""
        return cls(set_id, _uris.normalise(uri))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, DestinationKey):
            return NotImplemented
        return self._hash == other._hash and self.set_id == other.set_id and self.uri == other.uri

    def __lt__(self, other: DestinationKey) -> bool:
        return (self.set_id, self.uri) < (other.set_id, other.uri)

    def __repr__(self) -> str:
        return f"DestinationKey({self.set_id}, {self.uri!r})"

    def __str__(self) -> str:
        return f"{self.set_id}:{self.uri}"


class UnknownSetError(LookupError):
    def __init__(self, set_id: int) -> None:
        super().__init__(f"no destination set {set_id}")
        self.set_id = set_id


class UnknownDestinationError(LookupError):
    pass


@dataclass(slots=True)
class Runtime:
    """Mutable state of one destination, carried across reloads by key."""

    health: _health.HealthRecord
    active_calls: int = 0

    def call_started(self) -> None:
        self.active_calls += 1

    def call_ended(self) -> None:
        self.active_calls = max(0, self.active_calls - 1)


@dataclass(slots=True, init=False)
class Target:
    """A destination with its runtime record: what selection returns. Treat it as immutable
    (not frozen: mypyc compiles a hand-written ``__init__``, not a frozen dataclass's)."""

    destination: Destination
    runtime: Runtime
    #: the destination's identity, made once per table: hops and events carry this object
    identity: DestinationKey

    def __init__(self, destination: Destination, runtime: Runtime) -> None:
        self.destination = destination
        self.runtime = runtime
        self.identity = DestinationKey.of(destination)

    @property
    def key(self) -> str:
        """`Destination.key`, the ``set:uri`` text that hash algorithms rank by."""
        return self.destination.key

    @property
    def priority(self) -> int:
        return self.destination.priority

    @property
    def weight(self) -> int:
        return self.destination.weight

    @property
    def rweight(self) -> int:
        rweight = self.destination.rweight
        return self.destination.weight if rweight is None else rweight

    @property
    def duid(self) -> str | None:
        return self.destination.duid

    @property
    def maxload(self) -> int:
        return self.destination.maxload

    @property
    def active_calls(self) -> int:
        return self.runtime.active_calls

    @property
    def latency_estimate(self) -> float | None:
        return self.runtime.health.latency.estimate

    @property
    def eligible(self) -> bool:
        return self.runtime.health.eligible


class DestinationSet:
    """One set: its targets in table order and the selector that orders them."""

    def __init__(
        self, config: SetConfig, targets: tuple[Target, ...], selector: _algorithms.Selector
    ) -> None:
        self.set_id = config.set_id
        self.algorithm = config.algorithm
        self.hash_key = config.hash_key
        self.config = config
        self.selector = selector
        # Table order: highest priority first, then configuration order.
        self.targets = tuple(sorted(targets, key=lambda t: -t.destination.priority))
        # Checked per request only when some destination has a limit.
        self._limited = any(t.maxload for t in self.targets)
        #: the key a hash-key set hashes, checked for presence per request; None for the others
        self.required_key = (
            _keys.parse(config.hash_key)
            if config.algorithm == "hash-key" and config.hash_key
            else None
        )
        self.refuse_missing_key = config.missing_hash_key == "reject"

    def eligible(self) -> list[Target]:
        return [t for t in self.targets if t.runtime.health.eligible]

    def select(self, ctx: _context.SelectionContext) -> list[Target]:
        """The failover order over eligible destinations below their ``maxLoad``."""
        candidates = self.eligible()
        if self._limited:
            candidates = _below_max_load(candidates)
        return self.selector.order(ctx, candidates)

    def select_first(self, identity: DestinationKey) -> list[Target] | None:
        """The failover order with ``identity`` first and the others in table order, without
        asking the algorithm (a retry is not a new call: a round-robin cursor stays where it
        is); None when that destination cannot take the request now."""
        candidates = self.eligible()
        if self._limited:
            candidates = _below_max_load(candidates)
        for i, target in enumerate(candidates):
            if target.identity == identity:
                return [target, *candidates[:i], *candidates[i + 1 :]]
        return None

    def key_missing(self, ctx: _context.SelectionContext) -> bool:
        """Whether a hash-key set's key is absent from the request (always False for others)."""
        key = self.required_key
        return key is not None and key.extract(ctx) is None


def _below_max_load(candidates: list[Target]) -> list[Target]:
    """Leave out destinations at their ``maxLoad``: active calls pooled by ``duid`` (two URIs
    of one gateway share its load), as call-load counts them."""
    load: dict[str, int] = {}
    for target in candidates:
        pool = target.duid or target.key
        load[pool] = load.get(pool, 0) + target.active_calls
    return [t for t in candidates if not (t.maxload and load[t.duid or t.key] >= t.maxload)]


def _new_record(
    dest: Destination, policy: _health.HealthPolicy, now: float
) -> _health.HealthRecord:
    record = _health.HealthRecord(changed_at=now, reason="configured")
    _apply_state_flags(record, dest.flags, policy)
    record.disabled = dest.disabled
    record.draining = dest.draining
    return record


def _apply_state_flags(
    record: _health.HealthRecord, flags: int, policy: _health.HealthPolicy
) -> None:
    if flags & _tableconfig.FLAG_INACTIVE:
        record.learned = _health.HealthState.INACTIVE
    elif flags & _tableconfig.FLAG_TRYING:
        record.learned = _health.HealthState.TRYING
    else:
        record.learned = _health.HealthState.ACTIVE
    record.failures = record.successes = 0
    if policy.mode is _health.ProbingMode.ALL:
        record.probing = True
    elif policy.mode is _health.ProbingMode.OFF:
        record.probing = False
    else:
        record.probing = bool(flags & _tableconfig.FLAG_PROBING)


def _carry(
    record: _health.HealthRecord,
    old: Destination,
    new: Destination,
    policy: _health.HealthPolicy,
    now: float,
) -> None:
    """Apply to a carried record only what changed in the configuration."""
    before = record.code
    if old.flags & _tableconfig.STATE_FLAGS != new.flags & _tableconfig.STATE_FLAGS:
        _apply_state_flags(record, new.flags, policy)
    # Configured disable always wins; enabling in config lifts only a
    # configured disable, not an admin's set-state dx.
    if new.disabled or old.disabled:
        record.disabled = new.disabled
    if new.draining or old.draining:
        record.draining = new.draining
    if record.code != before:
        record.changed_at = now
        record.reason = "configuration changed"


class DestinationTable:
    """An immutable snapshot of all sets. Build with `DestinationTable.build`."""

    def __init__(
        self,
        sets: Mapping[int, DestinationSet],
        default_set: int | None,
        routing: _routes.RoutingConfig | None = None,
        names: tuple[_names.NameStatus, ...] = (),
    ) -> None:
        self.sets: Mapping[int, DestinationSet] = MappingProxyType(dict(sets))
        #: the DNS-named destinations the table was expanded from, with their state
        self.names = names
        self.default_set = default_set
        #: the set that takes requests no route decides: ``default_set``, else the lowest id
        self.fallback_set = default_set if default_set is not None else min(sets, default=0)
        self._by_key = {t.key: t for s in self.sets.values() for t in s.targets}
        #: which set takes a request; None when every request goes to ``fallback_set``
        self.routes = (
            None
            if routing is None
            else _routes.RouteTable.compile(
                routing,
                {i: [t.destination.host for t in s.targets] for i, s in self.sets.items()},
                self.fallback_set if self.sets else None,
            )
        )

    @classmethod
    def build(
        cls,
        config: TableConfig,
        previous: DestinationTable | None,
        now: float,
        *,
        policy: _health.HealthPolicy | None = None,
        rng: random.Random | None = None,
        names: tuple[_names.NameStatus, ...] = (),
    ) -> DestinationTable:
        """A new table; runtime records and selectors carried from `previous`. ``config``
        holds addresses only (`names.expand` made it); ``names`` says how its names fared."""
        policy = policy or _health.HealthPolicy()
        sets: dict[int, DestinationSet] = {}
        for set_config in config.sets:
            targets = []
            for dest in set_config.destinations:
                old = previous._by_key.get(dest.key) if previous else None
                if old is not None and old.destination.health_identity == dest.health_identity:
                    _carry(old.runtime.health, old.destination, dest, policy, now)
                    runtime = old.runtime
                else:
                    runtime = Runtime(_new_record(dest, policy, now))
                targets.append(Target(dest, runtime))
            old_set = previous.sets.get(set_config.set_id) if previous else None
            if (
                old_set is not None
                and old_set.algorithm == set_config.algorithm
                and old_set.hash_key == set_config.hash_key
            ):
                selector = old_set.selector
            else:
                selector = _algorithms.make_selector(
                    set_config.algorithm, hash_key=set_config.hash_key, rng=rng
                )
            sets[set_config.set_id] = DestinationSet(set_config, tuple(targets), selector)
        return cls(sets, config.default_set, config.routing, names)

    def get_set(self, set_id: int) -> DestinationSet:
        try:
            return self.sets[set_id]
        except KeyError:
            raise UnknownSetError(set_id) from None

    def select(self, set_id: int, ctx: _context.SelectionContext) -> list[Target]:
        """Ordered failover list for a new dialog; raises `UnknownSetError`."""
        return self.get_set(set_id).select(ctx)

    def find(self, set_id: int, uri: str) -> Target:
        """The target for `uri` in a set, however the URI is spelled."""
        dest_set = self.get_set(set_id)
        try:
            key = DestinationKey.parse(set_id, uri)
        except ValueError as exc:
            raise UnknownDestinationError(str(exc)) from None
        for target in dest_set.targets:
            if target.identity == key:
                return target
        raise UnknownDestinationError(f"no destination {uri} in set {set_id}")

    def targets(self) -> Iterator[Target]:
        """Every target of every set, sets in id order."""
        for set_id in sorted(self.sets):
            yield from self.sets[set_id].targets

    def set_state(self, set_id: int, uri: str, code: str, now: float) -> _health.Event | None:
        """`set-state` by set and URI (the control API's verb)."""
        return _health.set_admin_state(self.find(set_id, uri).runtime.health, code, now)

    def expire(self, now: float) -> list[tuple[Target, _health.Event]]:
        """End Retry-After drains that are due; call from a timer."""
        events = []
        for target in self.targets():
            event = _health.expire_drain(target.runtime.health, now)
            if event is not None:
                events.append((target, event))
        return events


class TargetIndex:
    """Look-ups into one table snapshot by `DestinationKey`: the key a hop and every core
    event carry, and the one the prober and the control API name.

    Rebuilt only when the table object changes (a reload): ``DestinationTable.find`` parses a
    URI and scans a set, too slow for every probe answer and every failed call. Its keys are
    the targets' own `Target.identity` objects, so a look-up with a hop's key (taken from the
    same target) matches by identity and never compares URIs.
    """

    def __init__(self) -> None:
        self.table: DestinationTable | None = None
        self._by_key: dict[DestinationKey, Target] = {}

    def refresh(self, table: DestinationTable) -> bool:
        """Follow ``table``; True when it is another table than before."""
        if table is self.table:
            return False
        self.table = table
        self._by_key = {t.identity: t for t in table.targets()}
        return True

    def get(self, key: DestinationKey) -> Target | None:
        return self._by_key.get(key)

    def keys(self) -> Iterator[DestinationKey]:
        return iter(self._by_key)

    def __iter__(self) -> Iterator[Target]:
        return iter(self._by_key.values())
