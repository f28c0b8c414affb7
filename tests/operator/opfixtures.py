"""Objects for the operator's unit tests: DispatcherSets, EndpointSlices, reports."""

from __future__ import annotations

from typing import Any

from sipdispatch.operator.render import SetObject


def dset(
    name: str, spec: dict[str, Any], *, generation: int = 1, created: str = "", uid: str = ""
) -> SetObject:
    return SetObject(
        name, uid or f"uid-{name}", generation, created or f"2030-01-01T00:00:00Z/{name}", spec
    )


def endpoint(
    address: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    pod: str | None = None,
) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if ready is not None:
        conditions["ready"] = ready
    if serving is not None:
        conditions["serving"] = serving
    if terminating is not None:
        conditions["terminating"] = terminating
    found: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if pod:
        found["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "voice"}
    return found


def endpoint_slice(
    name: str,
    endpoints: list[dict[str, Any]],
    *,
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "sip", "port": 5080, "protocol": "UDP"}],
        "endpoints": endpoints,
    }


#: what a proxy's selection decides for each state, except AX: coming up (not eligible) or
#: active and not probed (eligible); a report of AX says which (``(set, uri, "AX", False)``)
ELIGIBLE = {"AP": True, "TP": True, "TX": True, "IP": False, "IX": False, "DX": False, "DR": False}


def report(
    replica: str,
    destinations: list[tuple[int, str, str] | tuple[int, str, str, bool]],
    *,
    reported_at: str = "2030-01-01T00:00:00.000Z",
    heartbeat: float = 30.0,
    latency_ms: float | None = 1.5,
    reason: str = "",
) -> dict[str, Any]:
    entries = []
    for set_id, uri, state, *eligible in destinations:
        entry: dict[str, Any] = {
            "set": set_id,
            "uri": uri,
            "state": state,
            "eligible": eligible[0] if eligible else ELIGIBLE[state],
            "reason": reason or f"{state} by {replica}",
            "changedAt": "2029-12-31T23:59:00.000Z",
        }
        if latency_ms is not None:
            entry["latencyMs"] = latency_ms
        entries.append(entry)
    return {
        "metadata": {"name": f"sipdispatch-{replica}"},
        "spec": {
            "proxy": "sipdispatch",
            "replica": replica,
            "table": "1",
            "reportedAt": reported_at,
            "heartbeatSeconds": heartbeat,
            "destinations": entries,
        },
    }
