"""EndpointSlices to destinations: every endpoint address of a set's gateway Services. Pure.

EndpointSlice semantics: ready endpoints are active, terminating ones that still serve are
draining (``DR``: no new dialogs), the others are not ready (left out of the table, listed in
the status). The same address in two slices (a slice being replaced) counts once, the better
condition winning. Each endpoint's URI is parsed once, here, for its identity and its order.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sipdispatch.api import models
from sipdispatch.dispatch import uris as _uris

__all__ = [
    "SERVICE_NAME_LABEL",
    "Condition",
    "Endpoint",
    "Order",
    "discover",
    "granted_namespaces",
    "identity",
    "locate",
    "slice_key",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Condition = Literal["active", "draining", "not-ready"]
Order = tuple[int, int | str, int]  # addresses in numeric order, host names after them

_PREFERENCE = {"active": 0, "draining": 1, "not-ready": 2}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint address of a gateway Service."""

    uri: str
    origin: str  # pod/NAME or service/NAME
    condition: Condition
    gateway: int  # index in spec.gateways
    key: str  # the normalised URI: one destination however it is spelled
    order: Order


def locate(uri: str) -> tuple[str, Order]:
    """The identity (normalised URI) and sort order of a destination URI; ``ValueError``
    when it is not a SIP URI. Orders 10.0.0.9 before 10.0.0.10, names after addresses."""
    parsed = _uris.parse_sip_uri(uri)
    try:
        address = ipaddress.ip_address(parsed.host_address)
    except ValueError:
        return str(parsed), (2, parsed.host, parsed.default_port())
    return str(parsed), (address.version - 4, int(address), parsed.default_port())


def identity(uri: str) -> str:
    """The normalised URI: one destination however it is spelled (``SIP:10.0.0.5`` is
    ``sip:10.0.0.5:5060;transport=udp``); ``ValueError`` when it is not a SIP URI."""
    return locate(uri)[0]


def slice_key(gateway: models.GatewaySpec) -> str:
    """Where a gateway's EndpointSlices are in the slices given to :func:`discover`: by
    Service name in the set's namespace, by ``namespace/name`` in another."""
    if gateway.namespace is None:
        return gateway.service
    return f"{gateway.namespace}/{gateway.service}"


def granted_namespaces(annotation: str | None) -> frozenset[str]:
    """The namespaces a Service's grant annotation names (comma- or space-separated)."""
    return frozenset((annotation or "").replace(",", " ").split())


def _condition(conditions: Mapping[str, Any]) -> Condition:
    # A nil `ready` means ready, a nil `serving` follows `ready`.
    ready = conditions.get("ready")
    ready = True if ready is None else bool(ready)
    serving = conditions.get("serving")
    serving = ready if serving is None else bool(serving)
    if conditions.get("terminating"):
        return "draining" if serving else "not-ready"
    return "active" if ready else "not-ready"


def _pick_port(
    ports: Sequence[Mapping[str, Any]], gateway: models.GatewaySpec
) -> tuple[int, str] | None:
    """The slice port to send SIP to and the transport, or None if there is none."""
    usable = [p for p in ports if isinstance(p.get("port"), int)]
    chosen: Mapping[str, Any] | None = None
    if isinstance(gateway.port, str):
        chosen = next((p for p in usable if p.get("name") == gateway.port), None)
    elif isinstance(gateway.port, int):
        chosen = next((p for p in usable if p["port"] == gateway.port), None)
    elif len(usable) == 1:
        chosen = usable[0]
    else:
        chosen = next((p for p in usable if p.get("name") == "sip"), None)
    if chosen is None:
        return None
    protocol = str(chosen.get("protocol") or "TCP").lower()
    transport = gateway.transport or protocol
    if transport not in ("udp", "tcp"):
        return None
    return int(chosen["port"]), transport


def _uri(address: str, port: int, transport: str, address_type: str) -> str:
    host = f"[{address}]" if address_type == "IPv6" or ":" in address else address
    suffix = ";transport=tcp" if transport == "tcp" else ""
    return f"sip:{host}:{port}{suffix}"


def _origin(endpoint: Mapping[str, Any], service: str) -> str:
    ref = endpoint.get("targetRef") or {}
    if ref.get("kind") == "Pod" and ref.get("name"):
        return f"pod/{ref['name']}"
    return f"service/{service}"


def discover(
    gateways: Sequence[models.GatewaySpec], slices: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[list[Endpoint], list[str]]:
    """Every endpoint address of ``gateways`` (one per destination, in address order), and
    warnings about what was unusable. ``slices``: EndpointSlices by :func:`slice_key`."""
    found: dict[str, Endpoint] = {}
    warnings: list[str] = []
    for index, gateway in enumerate(gateways):
        key = slice_key(gateway)
        service_slices = sorted(
            slices.get(key, ()), key=lambda s: str(s.get("metadata", {}).get("name"))
        )
        if not service_slices:
            warnings.append(f"gateways[{index}]: Service {key} has no EndpointSlices")
        for piece in service_slices:
            name = piece.get("metadata", {}).get("name")
            address_type = str(piece.get("addressType") or "IPv4")
            picked = _pick_port(piece.get("ports") or (), gateway)
            if picked is None:
                warnings.append(
                    f"gateways[{index}]: EndpointSlice {name} has no usable port "
                    f"{gateway.port if gateway.port is not None else '(only one, or sip)'}"
                )
                continue
            port, transport = picked
            for endpoint in piece.get("endpoints") or ():
                condition = _condition(endpoint.get("conditions") or {})
                origin = _origin(endpoint, gateway.service)
                for address in endpoint.get("addresses") or ():
                    uri = _uri(str(address), port, transport, address_type)
                    try:
                        key, order = locate(uri)
                    except ValueError as exc:
                        warnings.append(f"gateways[{index}]: EndpointSlice {name}: {exc}")
                        continue
                    seen = found.get(key)
                    if seen is None or _PREFERENCE[condition] < _PREFERENCE[seen.condition]:
                        found[key] = Endpoint(uri, origin, condition, index, key, order)
    return sorted(found.values(), key=lambda e: e.order), warnings
