"""JSON views of the destination table, shared by the control API and ``sipdispatch-ctl``."""

from __future__ import annotations

from typing import Any

from sipdispatch.dispatch.destinations import DestinationTable, Target

__all__ = ["destination_view", "table_view"]


def destination_view(target: Target, now: float, clock_offset: float) -> dict[str, Any]:
    """One destination as ``GET /v1/destinations`` shows it.

    ``clock_offset`` turns the loop's monotonic clock into Unix time for ``changedAt``.
    """
    dest = target.destination
    health = target.runtime.health
    latency = health.latency
    return {
        "uri": dest.uri,
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
            }
            for set_id in sorted(table.sets)
        ],
    }
