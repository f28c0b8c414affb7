"""What the operator keeps between renderings, stored beside the table. Pure.

An endpoint that disappears stays in the table as draining for its set's drain grace; the
time it went is remembered here, and so is each set's last spec that rendered (which keeps
rendering while the current one is invalid). The operator writes the memory into the table's
ConfigMap, so that a restart neither restarts a grace nor forgets a good spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EndpointMemory", "GoodSpec", "Memory"]


@dataclass(frozen=True, slots=True)
class GoodSpec:
    """The last spec of a DispatcherSet that rendered."""

    uid: str
    generation: int
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EndpointMemory:
    """An endpoint destination in the table, and when it went (if it did)."""

    origin: str
    priority: int = 0
    weight: int = 1
    gone_since: float | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    """What the operator keeps between renderings (stored beside the table)."""

    good: Mapping[str, GoodSpec] = field(default_factory=dict)
    endpoints: Mapping[str, Mapping[str, EndpointMemory]] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "good": {
                name: {"uid": g.uid, "generation": g.generation, "spec": g.spec}
                for name, g in sorted(self.good.items())
            },
            "endpoints": {
                name: {
                    uri: {
                        "origin": m.origin,
                        "priority": m.priority,
                        "weight": m.weight,
                        "goneSince": m.gone_since,
                    }
                    for uri, m in sorted(entries.items())
                }
                for name, entries in sorted(self.endpoints.items())
            },
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Memory:
        """Read a stored memory; anything unreadable is forgotten, not fatal."""
        try:
            data = json.loads(text or "{}")
            good = {
                name: GoodSpec(str(g["uid"]), int(g["generation"]), dict(g["spec"]))
                for name, g in data.get("good", {}).items()
            }
            endpoints = {
                name: {
                    uri: EndpointMemory(
                        str(m["origin"]),
                        int(m.get("priority", 0)),
                        int(m.get("weight", 1)),
                        None if m.get("goneSince") is None else float(m["goneSince"]),
                    )
                    for uri, m in entries.items()
                }
                for name, entries in data.get("endpoints", {}).items()
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()
        return cls(good, endpoints)
