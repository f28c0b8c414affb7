"""Builders shared by the dispatch tests: candidates, contexts and tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sipdispatch.dispatch import context, destinations, health, tableconfig


@dataclass(frozen=True)
class Cand:
    """A plain `algorithms.Candidate` for selector tests."""

    key: str
    priority: int = 0
    weight: int = 1
    rweight: int = 1
    duid: str | None = None
    maxload: int = 0
    active_calls: int = 0
    latency_estimate: float | None = None


def cands(n: int, **fields: object) -> list[Cand]:
    return [Cand(f"1:sip:10.0.0.{i}:5060;transport=udp", **fields) for i in range(1, n + 1)]  # type: ignore[arg-type]


def ctx(call_id: str, **fields: object) -> context.RequestContext:
    return context.RequestContext(call_id, **fields)  # type: ignore[arg-type]


def call_ids(n: int, prefix: str = "call") -> list[str]:
    return [f"{prefix}-{i}@198.51.100.7" for i in range(n)]


def table(
    uris: Sequence[str],
    algorithm: str | int = "round-robin",
    *,
    set_id: int = 1,
    previous: destinations.DestinationTable | None = None,
    now: float = 0.0,
    policy: health.HealthPolicy | None = None,
    **create: object,
) -> destinations.DestinationTable:
    """A one-set table over `uris` (keyword arguments go to `Destination.create`)."""
    dests = tuple(tableconfig.Destination.create(set_id, uri, **create) for uri in uris)  # type: ignore[arg-type]
    config = tableconfig.TableConfig((tableconfig.SetConfig(set_id, dests, str(algorithm)),))
    return destinations.DestinationTable.build(config, previous, now, policy=policy)


def first_uris(
    dtable: destinations.DestinationTable, keys: Iterable[str], set_id: int = 1
) -> list[str]:
    return [dtable.select(set_id, ctx(k))[0].destination.uri for k in keys]
