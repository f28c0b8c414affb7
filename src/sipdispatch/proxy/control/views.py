"""JSON views of the destination table, shared by the control API and ``sipdispatch-ctl``."""

from __future__ import annotations

from typing import Any

from sipdispatch.dispatch.destinations import DestinationTable, Target
from sipdispatch.dispatch.names import NameStatus

__all__ = ["destination_view", "name_view", "table_view"]


def destination_view(target: Target, now: float, clock_offset: float) -> dict[str, Any]:
    """One destination as ``GET /v1/destinations`` shows it.

    ``clock_offset`` turns the loop's monotonic clock into Unix time for ``changedAt``.
    """
    dest = target.destination
    health = target.runtime.health
    latency = health.latency
    return {
        "uri": dest.uri,
        #: the DNS name it was resolved from, as configured; None: configured by address
        "name": dest.name,
        "state": health.code,
        "priority": dest.priority,
        "weight": dest.weight,
        "flags": dest.flags,
        "attrs": dict(dest.attrs),
        "activeCalls": target.runtime.active_calls,
        "reason": health.reason,
        "changedAt": round(health.changed_at + clock_offset, 3) if health.changed_at else None,
        "secondsInState": round(now - health.changed_at, 3) if health.changed_at else None,
        "latency": {
            "avg": round(latency.mean * 1000, 3),
            "std": round(latency.std * 1000, 3),
            "est": round((latency.estimate or 0.0) * 1000, 3),
            "max": round(latency.maximum * 1000, 3),
            "timeouts": latency.timeouts,
            "samples": latency.count,
        },
    }


def name_view(name: NameStatus) -> dict[str, Any]:
    """One destination named by DNS: how its resolution went and the targets it became."""
    return {
        "uri": name.uri,
        "lookup": str(name.query),
        "state": name.state.value,
        "reason": name.reason,
        "addresses": list(name.addresses),
    }


def table_view(table: DestinationTable, now: float, clock_offset: float) -> dict[str, Any]:
    return {
        "defaultSet": table.default_set,
        "sets": [
            {
                "id": set_id,
                "algorithm": table.sets[set_id].algorithm,
                "destinations": [
                    destination_view(t, now, clock_offset) for t in table.sets[set_id].targets
                ],
                "names": [name_view(n) for n in table.names if n.set_id == set_id],
            }
            for set_id in sorted(table.sets)
        ],
    }
