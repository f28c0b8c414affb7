"""Selection algorithms: one small class each, behind the `Selector` protocol.

A selector turns the eligible destinations of a set (in table order: highest
priority first, then file order) into the ordered failover list for one
request: the first is the choice, the rest are what `ds_next_dst` would try.
Each selector owns its own state (a cursor, a slot table); a set just holds
one selector.

Kamailio's numbers and readable names are both accepted (`resolve`).

Hashing (0, 1, 2, 3, 5, 7) is **rendezvous hashing** (highest random weight):
every destination gets a score from a stable 64-bit hash of (request key,
destination key) and the list is sorted by score. Adding one destination to
N remaps only the keys it wins, about 1/(N+1), and the failover order of a
key is the full ranking, the same on every replica and across restarts
(Kamailio's `hash % n` remaps most keys). Python's `hash()` is salted per
process and is never used.

Weights (9, 11) walk a precomputed slot table (`weights.py`) with a cursor:
exact shares every turn. Both renormalise over the destinations eligible now
(Kamailio's 9 hands a dead destination's share to its neighbour in the list,
which overloads it; that is not copied). 9 reads `weight`, 11 `rweight`
(which defaults to `weight`; 0 keeps a destination out of the first choice).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import ClassVar, Final, Protocol, TypeVar

from sipdispatch.dispatch import context as _context
from sipdispatch.dispatch import keys as _keys
from sipdispatch.dispatch import weights as _weights

__all__ = [
    "ALGORITHMS",
    "Candidate",
    "Selector",
    "UnknownAlgorithmError",
    "make_selector",
    "rendezvous_order",
    "resolve",
]


class Candidate(Protocol):
    """What algorithms read about a destination (implemented by `Target`)."""

    @property
    def key(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def rweight(self) -> int: ...
    @property
    def duid(self) -> str | None: ...
    @property
    def maxload(self) -> int: ...
    @property
    def active_calls(self) -> int: ...
    @property
    def latency_estimate(self) -> float | None: ...


C = TypeVar("C", bound=Candidate)


class Selector(Protocol):
    name: ClassVar[str]
    number: ClassVar[int]

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        """Order eligible `candidates` for failover; may drop some (call load)."""
        ...


class UnknownAlgorithmError(ValueError):
    pass


_MASK: Final = (1 << 64) - 1


@functools.lru_cache(maxsize=65536)
def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    # splitmix64's finaliser: a bijection with full avalanche, so the score
    # of (key, destination) behaves like an independent random number.
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def rendezvous_order(key: str, candidates: Sequence[C]) -> list[C]:
    """Candidates ranked by highest random weight for `key`."""
    k = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return sorted(candidates, key=lambda c: (_mix(k ^ _hash64(c.key)), c.key), reverse=True)


class _HashSelector:
    """Rendezvous over a key taken from the request, Call-ID if it is missing."""

    name: ClassVar[str]
    number: ClassVar[int]

    def request_key(self, ctx: _context.SelectionContext) -> str | None:
        raise NotImplementedError

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        key = self.request_key(ctx)
        return rendezvous_order(key if key else ctx.call_id, candidates)


class HashCallId(_HashSelector):
    name: ClassVar[str] = "hash-callid"
    number: ClassVar[int] = 0

    def request_key(self, ctx: _context.SelectionContext) -> str | None:
        return ctx.call_id


class HashFrom(_HashSelector):
    name: ClassVar[str] = "hash-from"
    number: ClassVar[int] = 1

    def request_key(self, ctx: _context.SelectionContext) -> str | None:
        return _keys.FROM_URI.extract(ctx)


class HashTo(_HashSelector):
    name: ClassVar[str] = "hash-to"
    number: ClassVar[int] = 2

    def request_key(self, ctx: _context.SelectionContext) -> str | None:
        return _keys.TO_URI.extract(ctx)


class HashRequestUri(_HashSelector):
    """The Request-URI's user (the dialled number), else its user@host."""

    name: ClassVar[str] = "hash-ruri"
    number: ClassVar[int] = 3

    def request_key(self, ctx: _context.SelectionContext) -> str | None:
        return _keys.RURI_USER.extract(ctx) or _keys.RURI.extract(ctx)


class HashAuthUser(_HashSelector):
    """The Authorization/Proxy-Authorization user name, else the Call-ID.

    Kamailio falls back to round-robin, which can send a retried request
    elsewhere; the Call-ID keeps one call on one destination.
    """

    name: ClassVar[str] = "hash-auth-user"
    number: ClassVar[int] = 5

    def request_key(self, ctx: _context.SelectionContext) -> str | None:
        return ctx.auth_username


class HashKey(_HashSelector):
    name: ClassVar[str] = "hash-key"
    number: ClassVar[int] = 7

    def __init__(self, hash_key: str) -> None:
        self.key = _keys.parse(hash_key)

    def request_key(self, ctx: _context.SelectionContext) -> str | None:
        return self.key.extract(ctx)


class RoundRobin:
    name: ClassVar[str] = "round-robin"
    number: ClassVar[int] = 4

    def __init__(self) -> None:
        self._next = 0

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        if not candidates:
            return []
        start = self._next % len(candidates)
        self._next = start + 1
        return [*candidates[start:], *candidates[:start]]


class Random:
    name: ClassVar[str] = "random"
    number: ClassVar[int] = 6

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        return self._rng.sample(candidates, len(candidates))


class Priority:
    """Serial: the table is already ordered by priority, highest first."""

    name: ClassVar[str] = "priority"
    number: ClassVar[int] = 8

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        return list(candidates)


class _WeightedCursor:
    """A cursor over a slot table rebuilt when the candidates change.

    The first choice comes from the table; the failover tail is the other
    candidates by decreasing weight, then those of weight 0.
    """

    name: ClassVar[str]
    number: ClassVar[int]

    def __init__(self) -> None:
        self._signature: tuple[tuple[str, int], ...] = ()
        self._slots: tuple[int, ...] = ()
        self._by_weight: tuple[int, ...] = ()
        self._next = 0

    def weight_of(self, candidate: Candidate) -> int:
        raise NotImplementedError

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        weights = [max(0, self.weight_of(c)) for c in candidates]
        signature = tuple(zip((c.key for c in candidates), weights, strict=True))
        if signature != self._signature:
            self._signature = signature
            self._slots = _weights.slot_table(weights)
            self._by_weight = tuple(sorted(range(len(weights)), key=lambda i: -weights[i]))
        if not self._slots:
            return list(candidates)  # all weights 0: nothing to prefer
        first = self._slots[self._next % len(self._slots)]
        self._next = (self._next + 1) % len(self._slots)
        return [candidates[first], *(candidates[i] for i in self._by_weight if i != first)]


class Weight(_WeightedCursor):
    name: ClassVar[str] = "weight"
    number: ClassVar[int] = 9

    def weight_of(self, candidate: Candidate) -> int:
        return candidate.weight


class RelativeWeight(_WeightedCursor):
    name: ClassVar[str] = "relative-weight"
    number: ClassVar[int] = 11

    def weight_of(self, candidate: Candidate) -> int:
        return candidate.rweight


class CallLoad:
    """Fewest active calls first; destinations at `maxload` are left out.

    Calls are pooled by `duid` (two URIs of one gateway share its load);
    ties keep table order. The core counts calls on the runtime records.
    """

    name: ClassVar[str] = "call-load"
    number: ClassVar[int] = 10

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        load: dict[str, int] = {}
        for c in candidates:
            pool = c.duid or c.key
            load[pool] = load.get(pool, 0) + c.active_calls
        open_ = [c for c in candidates if not (c.maxload and load[c.duid or c.key] >= c.maxload)]
        return sorted(open_, key=lambda c: load[c.duid or c.key])


class Parallel:
    """Every candidate, in table order: the core forks to all of them."""

    name: ClassVar[str] = "parallel"
    number: ClassVar[int] = 12

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        return list(candidates)


class Latency:
    """Lowest estimated latency first; unmeasured destinations last.

    Ties (and the unmeasured) keep table order. Timeouts feed the estimate,
    so a destination that stops answering sinks (see `latency.py`).
    """

    name: ClassVar[str] = "latency"
    number: ClassVar[int] = 13

    def order(self, ctx: _context.SelectionContext, candidates: Sequence[C]) -> list[C]:
        def rank(c: C) -> tuple[bool, float]:
            estimate = c.latency_estimate
            return (estimate is None, estimate or 0.0)

        return sorted(candidates, key=rank)


Factory = Callable[[str | None, random.Random | None], Selector]

ALGORITHMS: Final[dict[str, Factory]] = {
    "hash-callid": lambda key, rng: HashCallId(),
    "hash-from": lambda key, rng: HashFrom(),
    "hash-to": lambda key, rng: HashTo(),
    "hash-ruri": lambda key, rng: HashRequestUri(),
    "round-robin": lambda key, rng: RoundRobin(),
    "hash-auth-user": lambda key, rng: HashAuthUser(),
    "random": lambda key, rng: Random(rng),
    "hash-key": lambda key, rng: HashKey(key or ""),
    "priority": lambda key, rng: Priority(),
    "weight": lambda key, rng: Weight(),
    "call-load": lambda key, rng: CallLoad(),
    "relative-weight": lambda key, rng: RelativeWeight(),
    "parallel": lambda key, rng: Parallel(),
    "latency": lambda key, rng: Latency(),
}
_BY_NUMBER: Final = dict(enumerate(ALGORITHMS))


def resolve(value: str | int) -> str:
    """The canonical name of an algorithm given by name or Kamailio number."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value in _BY_NUMBER:
            return _BY_NUMBER[value]
    elif isinstance(value, str):
        text = value.strip().lower().replace("_", "-")
        if text.isdigit() and int(text) in _BY_NUMBER:
            return _BY_NUMBER[int(text)]
        if text in ALGORITHMS:
            return text
    known = ", ".join(f"{n} {name}" for n, name in _BY_NUMBER.items())
    raise UnknownAlgorithmError(f"unknown algorithm {value!r}; expected one of: {known}")


def make_selector(
    algorithm: str | int, *, hash_key: str | None = None, rng: random.Random | None = None
) -> Selector:
    """A fresh selector; `hash_key` is required by (and only used by) hash-key."""
    name = resolve(algorithm)
    if name == "hash-key" and not hash_key:
        raise ValueError("algorithm hash-key needs a hash key (a header name or ruri.user, ...)")
    return ALGORITHMS[name](hash_key, rng)
