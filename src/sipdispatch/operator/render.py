"""Rendering: the DispatcherSets of one proxy and their Services' EndpointSlices become the
proxy's destination table. Pure: objects and ``now`` in, a table and a memory out.

The table is the proxy's own YAML configuration (``sets``, ``probing``, ``failover``), what
``sipdispatch-proxy --config`` reads, validated by the proxy's model before it is written.

EndpointSlice endpoints become destinations: ready ones active, terminating ones that still
serve draining (``DR``), others left out (and listed in the status as not ready). An endpoint
that disappears stays in the table as draining for the set's ``drainGraceSeconds`` and is then
removed; the time it went is kept in the ``Memory``, which the operator stores beside the
table so that a restart does not restart the grace.

A spec that the schema let through but the model refuses (a duplicate URI, ``hashKey``
without algorithm hash-key, a probing timeout longer than the interval, a set id already
taken by an older DispatcherSet) does not reach the table: the set's last good spec keeps
rendering, with the current endpoints, and the issues name the field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from sipdispatch.api import models
from sipdispatch.dispatch import config as _config
from sipdispatch.dispatch import configfile as _configfile
from sipdispatch.dispatch import tableconfig as _tableconfig
from sipdispatch.dispatch import uris as _uris

__all__ = [
    "ORIGIN_STATIC",
    "Endpoint",
    "EndpointMemory",
    "GoodSpec",
    "Issue",
    "Memory",
    "RenderError",
    "RenderedDestination",
    "SetObject",
    "SetRendering",
    "TableRendering",
    "discover",
    "parse_spec",
    "render",
]

ORIGIN_STATIC = "static"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TABLE_HEADER = (
    "# Rendered by sipdispatch-operator from the DispatcherSets of this proxy; edits are\n"
    "# overwritten. The format is sipdispatch-proxy's --config file.\n"
)

Condition = Literal["active", "draining", "not-ready"]


class RenderError(RuntimeError):
    """The rendered table was refused by the proxy's model: a bug, never the user's input."""


@dataclass(frozen=True, slots=True)
class Issue:
    """Why a spec cannot be used: the field and the reason."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True, slots=True)
class SetObject:
    """What rendering needs of a DispatcherSet object."""

    name: str
    uid: str
    generation: int
    created: str  # creationTimestamp: the older set keeps a contested set id
    spec: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SetObject:
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            created=str(meta.get("creationTimestamp") or ""),
            spec=body.get("spec") or {},
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint address of a gateway Service."""

    uri: str
    origin: str  # pod/NAME or service/NAME
    condition: Condition
    gateway: int  # index in spec.gateways


@dataclass(frozen=True, slots=True)
class RenderedDestination:
    """One destination of a set as written into the table."""

    uri: str
    origin: str
    priority: int = 0
    weight: int = 1
    draining: bool = False
    disabled: bool = False
    gone_since: float | None = None  # the endpoint disappeared then; removed after the grace


@dataclass(frozen=True, slots=True)
class SetRendering:
    """What became of one DispatcherSet."""

    name: str
    set_id: int | None  # None: the set is not in the table
    algorithm: str | None
    issues: tuple[Issue, ...] = ()  # why the current spec is not used (empty: it is)
    served_generation: int | None = None  # the generation whose spec is in the table
    drain_grace: float = 0.0
    destinations: tuple[RenderedDestination, ...] = ()
    not_ready: tuple[Endpoint, ...] = ()
    warnings: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class TableRendering:
    """The table of one proxy and what became of each of its sets."""

    data: Mapping[str, Any]  # the proxy configuration (camelCase), validated
    memory: Memory
    sets: Mapping[str, SetRendering]
    probing_from: str | None = None
    failover_from: str | None = None
    next_change: float | None = None  # when a drain grace ends: render again then

    @property
    def text(self) -> str:
        return TABLE_HEADER + yaml.safe_dump(dict(self.data), sort_keys=False, width=100)


# ---------------------------------------------------------------------------- specs


def _issues(exc: ValidationError, prefix: tuple[str | int, ...]) -> tuple[Issue, ...]:
    out = []
    for error in exc.errors(include_url=False):
        path = (*prefix, *error["loc"])
        if error["type"] == "config_issue":
            path += tuple((error.get("ctx") or {}).get("subpath", ()))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] not in ("value_error", "config_issue"):
            message = f"{message} (got {error['input']!r})"
        out.append(Issue(_configfile.Issue(path, message).location, message))
    return tuple(out)


def parse_spec(
    spec: Mapping[str, Any],
) -> tuple[models.DispatcherSetSpec | None, tuple[Issue, ...]]:
    """Validate a DispatcherSet spec, including what only the proxy's set model checks."""
    try:
        parsed = models.DispatcherSetSpec.model_validate(dict(spec))
    except ValidationError as exc:
        return None, _issues(exc, ("spec",))
    try:
        _config.SetSpec.model_validate(_static_set(parsed))
    except ValidationError as exc:
        renamed = tuple(
            Issue(i.field.replace("spec.id", "spec.setId", 1), i.reason)
            for i in _issues(exc, ("spec",))
        )
        return None, renamed
    return parsed, ()


def _static_set(spec: models.DispatcherSetSpec) -> dict[str, Any]:
    # The algorithm is always written, so the proxy's --algorithm default never applies.
    data: dict[str, Any] = {
        "id": spec.set_id,
        "algorithm": spec.algorithm or _tableconfig.DEFAULT_ALGORITHM,
    }
    if spec.hash_key is not None:
        data["hashKey"] = spec.hash_key
    data["destinations"] = [_dump(d) for d in spec.destinations]
    return data


def _dump(model: Any) -> dict[str, Any]:
    result: dict[str, Any] = model.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    return result


# ---------------------------------------------------------------------------- endpoints


def _condition(conditions: Mapping[str, Any]) -> Condition:
    # EndpointSlice semantics: a nil `ready` means ready, a nil `serving` follows `ready`.
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


_PREFERENCE = {"active": 0, "draining": 1, "not-ready": 2}


def discover(
    spec: models.DispatcherSetSpec, slices: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[list[Endpoint], list[str]]:
    """Every endpoint address of the set's gateways (one per URI), and what was unusable."""
    found: dict[str, Endpoint] = {}
    warnings: list[str] = []
    for index, gateway in enumerate(spec.gateways):
        service_slices = sorted(
            slices.get(gateway.service, ()), key=lambda s: str(s.get("metadata", {}).get("name"))
        )
        if not service_slices:
            warnings.append(f"gateways[{index}]: Service {gateway.service} has no EndpointSlices")
        for piece in service_slices:
            address_type = str(piece.get("addressType") or "IPv4")
            picked = _pick_port(piece.get("ports") or (), gateway)
            if picked is None:
                name = piece.get("metadata", {}).get("name")
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
                    seen = found.get(uri)
                    # The same address in two slices (a slice being replaced): the better wins.
                    if seen is None or _PREFERENCE[condition] < _PREFERENCE[seen.condition]:
                        found[uri] = Endpoint(uri, origin, condition, index)
    return sorted(found.values(), key=lambda e: _order(e.uri)), warnings


def _order(uri: str) -> tuple[int, int | str, int]:
    """Endpoints in address order (10.0.0.9 before 10.0.0.10), names after addresses."""
    parsed = _uris.parse_sip_uri(uri)
    try:
        address = ipaddress.ip_address(parsed.host_address)
    except ValueError:
        return (2, parsed.host, parsed.default_port())
    return (address.version - 4, int(address), parsed.default_port())


def _key(uri: str) -> str:
    return _uris.normalise(uri)


# ---------------------------------------------------------------------------- one set


@dataclass
class _SetResult:
    rendering: SetRendering
    table_entry: dict[str, Any]
    endpoints: dict[str, EndpointMemory]
    wake: float | None


def _render_set(
    obj: SetObject,
    spec: models.DispatcherSetSpec,
    slices: Mapping[str, Sequence[Mapping[str, Any]]],
    remembered: Mapping[str, EndpointMemory],
    now: float,
    *,
    issues: tuple[Issue, ...],
    served_generation: int,
) -> _SetResult:
    endpoints, warnings = discover(spec, slices)
    static_keys = {_key(d.uri) for d in spec.destinations}
    entries = [_dump(d) for d in spec.destinations]
    rendered = [
        RenderedDestination(d.uri, ORIGIN_STATIC, d.priority, d.weight, d.draining, d.disabled)
        for d in spec.destinations
    ]
    current: dict[str, EndpointMemory] = {}
    not_ready: list[Endpoint] = []
    wake: float | None = None
    dynamic: list[RenderedDestination] = []
    for endpoint in endpoints:
        if _key(endpoint.uri) in static_keys:
            continue  # a static destination says how to treat this address
        if endpoint.condition == "not-ready":
            not_ready.append(endpoint)
            continue
        gateway = spec.gateways[endpoint.gateway]
        current[endpoint.uri] = EndpointMemory(endpoint.origin, gateway.priority, gateway.weight)
        dynamic.append(
            RenderedDestination(
                endpoint.uri,
                endpoint.origin,
                gateway.priority,
                gateway.weight,
                draining=endpoint.condition == "draining",
            )
        )
    left_out = {e.uri for e in not_ready}
    for uri, memory in remembered.items():
        if uri in current or uri in left_out or _key(uri) in static_keys:
            continue
        since = now if memory.gone_since is None else memory.gone_since
        until = since + spec.drain_grace_seconds
        if now >= until:
            continue  # drained long enough: removed
        wake = until if wake is None else min(wake, until)
        current[uri] = EndpointMemory(memory.origin, memory.priority, memory.weight, since)
        dynamic.append(
            RenderedDestination(
                uri, memory.origin, memory.priority, memory.weight, True, gone_since=since
            )
        )
    dynamic.sort(key=lambda d: _order(d.uri))
    for dest in dynamic:
        entry: dict[str, Any] = {"uri": dest.uri}
        if dest.priority:
            entry["priority"] = dest.priority
        if dest.weight != 1:
            entry["weight"] = dest.weight
        if dest.draining:
            entry["draining"] = True
        entries.append(entry)
    table_entry = _static_set(spec)
    table_entry["destinations"] = entries
    rendering = SetRendering(
        name=obj.name,
        set_id=spec.set_id,
        algorithm=spec.algorithm or _tableconfig.DEFAULT_ALGORITHM,
        issues=issues,
        served_generation=served_generation,
        drain_grace=spec.drain_grace_seconds,
        destinations=(*rendered, *dynamic),
        not_ready=tuple(not_ready),
        warnings=tuple(warnings),
    )
    return _SetResult(rendering, table_entry, current, wake)


# ---------------------------------------------------------------------------- the table


def _proxy_wide(
    chosen: Sequence[tuple[SetObject, models.DispatcherSetSpec]], name: str
) -> tuple[str | None, Any, list[tuple[str, str]]]:
    """The set whose `name` (probing, failover) the proxy uses, and sets that are ignored."""
    given = [(obj, getattr(spec, name)) for obj, spec in chosen if getattr(spec, name)]
    if not given:
        return None, None, []
    owner, value = given[0]
    ignored = [
        (obj.name, f"spec.{name}: ignored, the proxy uses the {name} of DispatcherSet {owner.name}")
        for obj, other in given[1:]
        if other != value
    ]
    return owner.name, value, ignored


def render(
    sets: Iterable[SetObject],
    slices: Mapping[str, Sequence[Mapping[str, Any]]],
    memory: Memory,
    now: float,
    *,
    source: str = "table",
) -> TableRendering:
    """The table of one proxy from its DispatcherSets and the EndpointSlices of their
    namespace (by Service name); ``now`` is Unix time. Raises ``RenderError`` only on a bug."""
    taken: dict[int, str] = {}
    results: dict[str, _SetResult] = {}
    renderings: dict[str, SetRendering] = {}
    chosen: list[tuple[SetObject, models.DispatcherSetSpec]] = []
    good: dict[str, GoodSpec] = {}
    for obj in sorted(sets, key=lambda o: (o.created, o.name)):
        spec, issues = parse_spec(obj.spec)
        if spec is not None and spec.set_id in taken:
            issues = (
                Issue(
                    "spec.setId",
                    f"set {spec.set_id} is already defined by DispatcherSet {taken[spec.set_id]}",
                ),
            )
            spec = None
        served = obj.generation
        if spec is None:
            last = memory.good.get(obj.name)
            if last is not None and last.uid == obj.uid:
                previous, _ = parse_spec(last.spec)
                if previous is not None and previous.set_id not in taken:
                    spec, served = previous, last.generation
                    good[obj.name] = last
        else:
            good[obj.name] = GoodSpec(obj.uid, obj.generation, dict(obj.spec))
        if spec is None:
            renderings[obj.name] = SetRendering(obj.name, None, None, issues)
            continue
        taken[spec.set_id] = obj.name
        remembered = memory.endpoints.get(obj.name, {})
        result = _render_set(
            obj, spec, slices, remembered, now, issues=issues, served_generation=served
        )
        results[obj.name] = result
        chosen.append((obj, spec))
    chosen.sort(key=lambda pair: pair[1].set_id)
    probing_from, probing, ignored_probing = _proxy_wide(chosen, "probing")
    failover_from, failover, ignored_failover = _proxy_wide(chosen, "failover")
    for name, warning in (*ignored_probing, *ignored_failover):
        before = results[name].rendering
        results[name].rendering = dataclasses.replace(before, warnings=(*before.warnings, warning))
    data: dict[str, Any] = {
        "sets": [results[obj.name].table_entry for obj, _ in chosen],
    }
    if probing is not None:
        data["probing"] = _dump(probing)
    if failover is not None:
        data["failover"] = _dump(failover)
    try:
        _configfile.validate_config(data, source)
    except _configfile.ConfigError as exc:
        raise RenderError(f"the rendered table is not valid: {exc}") from None
    renderings.update({name: result.rendering for name, result in results.items()})
    wakes = [r.wake for r in results.values() if r.wake is not None]
    return TableRendering(
        data=data,
        memory=Memory(good, {name: r.endpoints for name, r in results.items() if r.endpoints}),
        sets=renderings,
        probing_from=probing_from,
        failover_from=failover_from,
        next_change=min(wakes) if wakes else None,
    )
