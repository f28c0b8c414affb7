"""Rendering: the DispatcherSets of one proxy and their Services' EndpointSlices become the
proxy's destination table. Pure: objects and ``now`` in, a table and a memory out.

The table is the proxy's own YAML configuration (``sets``, ``probing``, ``failover``), what
``sipdispatch-proxy --config`` reads. Each set is one value of the proxy's set model, built
once from parts validated once (the spec by :mod:`.specs`, the endpoints' URIs by
:mod:`.endpoints`), not validated again as a whole.

EndpointSlice endpoints become destinations: ready ones active, terminating ones that still
serve draining (``DR``), others left out (and listed in the status as not ready). An endpoint
that disappears stays in the table as draining for the set's ``drainGraceSeconds`` and is then
removed; the time it went is kept in the ``Memory`` (:mod:`.memory`), which the operator
stores beside the table so that a restart does not restart the grace.

A spec that the schema let through but the model refuses (a duplicate URI, ``hashKey``
without algorithm hash-key, a probing timeout longer than the interval, a set id already
taken by an older DispatcherSet, a gateway Service in another namespace that does not grant
the set's) does not reach the table: the set's last good spec keeps
rendering, with the current endpoints, and the issues name the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml
from pydantic import BaseModel

from sipdispatch.api.names import GATEWAY_GRANT
from sipdispatch.dispatch import config as _config
from sipdispatch.dispatch.configfile import Issue
from sipdispatch.operator import adminstates as _admin
from sipdispatch.operator import endpoints as _endpoints
from sipdispatch.operator import routes as _routes
from sipdispatch.operator.endpoints import Endpoint, Order
from sipdispatch.operator.memory import EndpointMemory, GoodSpec, Memory
from sipdispatch.operator.specs import ValidSpec, parse_spec

__all__ = [
    "ORIGIN_STATIC",
    "Grants",
    "RenderedDestination",
    "SetObject",
    "SetRendering",
    "TableRendering",
    "render",
]

ORIGIN_STATIC = "static"
TABLE_HEADER = (
    "# Rendered by sipdispatch-operator from the DispatcherSets of this proxy; edits are\n"
    "# overwritten. The format is sipdispatch-proxy's --config file.\n"
)


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
class RenderedDestination:
    """One destination of a set as written into the table."""

    uri: str
    origin: str
    priority: int = 0
    weight: int = 1
    draining: bool = False
    disabled: bool = False
    gone_since: float | None = None  # the endpoint disappeared then; removed after the grace
    held: str = ""  # the spec.adminStates entry that disables or drains it, and why
    max_load: int = 0  # per proxy replica (static destinations only)


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
    takes: str | None = None  # which requests the set takes (its match), for kubectl


@dataclass(frozen=True)
class TableRendering:
    """The table of one proxy and what became of each of its sets."""

    data: Mapping[str, Any]  # the proxy configuration (camelCase, defaults left out)
    memory: Memory
    sets: Mapping[str, SetRendering]
    probing_from: str | None = None
    failover_from: str | None = None
    next_change: float | None = None  # when a drain grace ends: render again then

    @property
    def text(self) -> str:
        return TABLE_HEADER + yaml.safe_dump(dict(self.data), sort_keys=False, width=100)


# ---------------------------------------------------------------------------- which spec


@dataclass(frozen=True, slots=True)
class _Choice:
    """The spec a DispatcherSet renders with; None: the set stays out of the table."""

    obj: SetObject
    valid: ValidSpec | None
    issues: tuple[Issue, ...]  # why the current spec is not used (empty: it is)
    served: int  # the generation whose spec renders
    good: GoodSpec | None  # the set's last good spec, to remember


@dataclass(frozen=True, slots=True)
class Grants:
    """Which gateway Services the sets of ``namespace`` may use: those in ``namespace``, and
    those elsewhere whose grant annotation names it (``granted``: by ``namespace/name``)."""

    namespace: str = ""
    granted: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def allows(self, slice_key: str) -> bool:
        owner = slice_key.rpartition("/")[0]  # "" for a Service of the sets' namespace
        return owner in ("", self.namespace) or self.namespace in self.granted.get(
            slice_key, frozenset()
        )

    def issues(self, valid: ValidSpec) -> tuple[Issue, ...]:
        """A gateway in another namespace whose Service does not grant this one."""
        return tuple(
            Issue(
                ("spec", "gateways", i, "namespace"),
                f"Service {gateway.namespace}/{gateway.service} does not grant DispatcherSets "
                f"of namespace {self.namespace} (annotation {GATEWAY_GRANT} on the Service)",
            )
            for i, gateway in enumerate(valid.spec.gateways)
            if not self.allows(_endpoints.slice_key(gateway))
        )


def _choose(sets: Iterable[SetObject], memory: Memory, grants: Grants) -> list[_Choice]:
    """Each set's spec, oldest set first: the older set keeps a contested set id, and an
    invalid spec falls back to the set's last good one while that id is still free."""
    taken: dict[int, str] = {}
    choices = []
    for obj in sorted(sets, key=lambda o: (o.created, o.name)):
        valid, issues = parse_spec(obj.spec)
        refused = () if valid is None else grants.issues(valid)
        if refused:
            valid, issues = None, refused
        if valid is not None and valid.spec.set_id in taken:
            set_id = valid.spec.set_id
            reason = f"set {set_id} is already defined by DispatcherSet {taken[set_id]}"
            valid, issues = None, (Issue(("spec", "setId"), reason),)
        if valid is not None:
            good = GoodSpec(obj.uid, obj.generation, dict(obj.spec))
            choice = _Choice(obj, valid, issues, obj.generation, good)
        else:
            choice = _fallback(obj, issues, memory.good.get(obj.name), taken)
        if choice.valid is not None:
            taken[choice.valid.spec.set_id] = obj.name
        choices.append(choice)
    return _check_matches(choices, memory)


def _check_matches(choices: list[_Choice], memory: Memory) -> list[_Choice]:
    """A set whose match cannot be used with the others falls back to its last good spec, or
    stays out of the table when that one cannot be used either."""
    for attempt in range(2):
        named = [(c.obj.name, c.valid) for c in choices if c.valid is not None]
        found = _routes.match_issues(named)
        if not found:
            break
        for i, choice in enumerate(choices):
            issues = found.get(choice.obj.name)
            if issues is None:
                continue
            issues = (*choice.issues, *issues)
            if attempt == 0:
                taken = {
                    c.valid.spec.set_id: c.obj.name
                    for c in choices
                    if c.valid is not None and c is not choice
                }
                last = memory.good.get(choice.obj.name)
                choices[i] = _fallback(choice.obj, issues, last, taken)
            else:
                choices[i] = _Choice(choice.obj, None, issues, choice.obj.generation, None)
    return choices


def _fallback(
    obj: SetObject, issues: tuple[Issue, ...], last: GoodSpec | None, taken: Mapping[int, str]
) -> _Choice:
    if last is not None and last.uid == obj.uid:
        previous, _ = parse_spec(last.spec)
        if previous is not None and previous.spec.set_id not in taken:
            return _Choice(obj, previous, issues, last.generation, last)
    return _Choice(obj, None, issues, obj.generation, None)


def _proxy_wide(
    in_table: Sequence[tuple[_Choice, ValidSpec]], name: str
) -> tuple[str | None, Any, dict[str, str]]:
    """The set whose ``name`` (probing, failover) the proxy uses, its value, and a warning
    for each set whose different one is ignored. ``in_table``: in set id order."""
    given = [(c.obj.name, getattr(v.spec, name)) for c, v in in_table if getattr(v.spec, name)]
    if not given:
        return None, None, {}
    owner, value = given[0]
    warning = f"spec.{name}: ignored, the proxy uses the {name} of DispatcherSet {owner}"
    return owner, value, {other: warning for other, theirs in given[1:] if theirs != value}


# ---------------------------------------------------------------------------- one set


@dataclass(frozen=True, slots=True)
class _SetResult:
    rendering: SetRendering
    table_set: _config.SetSpec | None  # None: not in the table
    endpoints: Mapping[str, EndpointMemory]
    wake: float | None


def _render_set(
    choice: _Choice,
    valid: ValidSpec,
    slices: Mapping[str, Sequence[Mapping[str, Any]]],
    remembered: Mapping[str, EndpointMemory],
    now: float,
    *,
    notes: tuple[str, ...],
) -> _SetResult:
    """One set in the table: its static destinations, then its endpoints in address order,
    the gone ones draining until their grace ends, each with its admin state. ``notes``:
    warnings found elsewhere."""
    spec = valid.spec
    holds = _admin.Holds(spec.admin_states)
    found, warnings = _endpoints.discover(spec.gateways, slices)
    current: dict[str, EndpointMemory] = {}
    dynamic: list[tuple[Order, RenderedDestination]] = []
    not_ready: list[Endpoint] = []
    for endpoint in found:
        if endpoint.key in valid.static_keys:
            continue  # a static destination says how to treat this address
        if endpoint.condition == "not-ready":
            not_ready.append(endpoint)
            continue
        gateway = spec.gateways[endpoint.gateway]
        current[endpoint.uri] = EndpointMemory(endpoint.origin, gateway.priority, gateway.weight)
        draining = endpoint.condition == "draining"
        dest = RenderedDestination(
            endpoint.uri, endpoint.origin, gateway.priority, gateway.weight, draining
        )
        dynamic.append((endpoint.order, _held(holds, dest, endpoint.key)))
    left_out = {e.uri for e in not_ready}
    wake: float | None = None
    for uri, memory in remembered.items():
        if uri in current or uri in left_out:
            continue
        try:
            key, order = _endpoints.locate(uri)
        except ValueError:
            continue  # not a URI this operator wrote: forgotten
        since = now if memory.gone_since is None else memory.gone_since
        until = since + spec.drain_grace_seconds
        if key in valid.static_keys or now >= until:
            continue  # a static destination now, or drained long enough: removed
        wake = until if wake is None else min(wake, until)
        current[uri] = EndpointMemory(memory.origin, memory.priority, memory.weight, since)
        dest = RenderedDestination(
            uri, memory.origin, memory.priority, memory.weight, draining=True, gone_since=since
        )
        dynamic.append((order, _held(holds, dest, key)))
    dynamic.sort(key=lambda pair: pair[0])
    endpoints = tuple(dest for _, dest in dynamic)
    static = tuple(
        _held(
            holds,
            RenderedDestination(
                d.uri,
                ORIGIN_STATIC,
                d.priority,
                d.weight,
                d.draining,
                d.disabled,
                max_load=d.max_load,
            ),
            key,
        )
        for d, key in zip(spec.destinations, valid.static_ids, strict=True)
    )
    entries = [
        *(
            _held_static(entry, dest)
            for entry, dest in zip(valid.static.destinations, static, strict=True)
        ),
        *(_entry(d) for d in endpoints),
    ]
    rendering = SetRendering(
        name=choice.obj.name,
        set_id=spec.set_id,
        algorithm=valid.algorithm,
        issues=choice.issues,
        served_generation=choice.served,
        drain_grace=spec.drain_grace_seconds,
        destinations=(*static, *endpoints),
        not_ready=tuple(not_ready),
        warnings=(*warnings, *notes),
        takes=_routes.describe(valid),
    )
    table_set = valid.static.model_copy(update={"destinations": entries})
    return _SetResult(rendering, table_set, current, wake)


def _held(holds: _admin.Holds, dest: RenderedDestination, key: str) -> RenderedDestination:
    """``dest`` with the admin state that holds it, if any: disabled wins over draining."""
    hold = holds.find(key, dest.origin)
    if hold is None:
        return dest
    return replace(
        dest,
        disabled=dest.disabled or hold.disabled,
        draining=dest.draining or hold.draining,
        held=hold.why,
    )


def _entry(dest: RenderedDestination) -> _config.DestinationSpec:
    # Not validated again: the URI was parsed by discover(), the rest by the spec's model.
    return _config.DestinationSpec.model_construct(
        uri=dest.uri,
        priority=dest.priority,
        weight=dest.weight,
        draining=dest.draining,
        disabled=dest.disabled,
    )


def _held_static(
    entry: _config.DestinationSpec, dest: RenderedDestination
) -> _config.DestinationSpec:
    """A static destination as the table carries it, with its admin state if one holds."""
    if (entry.disabled, entry.draining) == (dest.disabled, dest.draining):
        return entry
    return entry.model_copy(update={"disabled": dest.disabled, "draining": dest.draining})


# ---------------------------------------------------------------------------- the table


def _dump(model: BaseModel) -> dict[str, Any]:
    result: dict[str, Any] = model.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    return result


def _table_data(
    sets: Iterable[_config.SetSpec],
    probing: _config.ProbingSpec | None,
    failover: _config.FailoverSpec | None,
    routes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The proxy configuration as written: defaults left out, but the sets and each set's
    destinations stated even when there are none."""
    data: dict[str, Any] = {"sets": []}
    if routes:
        data["routes"] = routes
    for table_set in sets:
        entry = _dump(table_set)
        entry.setdefault("destinations", [])  # its last key, as in the model
        data["sets"].append(entry)
    for name, value in (("probing", probing), ("failover", failover)):
        if value is not None:
            data[name] = _dump(value)
    return data


def render(
    sets: Iterable[SetObject],
    slices: Mapping[str, Sequence[Mapping[str, Any]]],
    memory: Memory,
    now: float,
    grants: Grants | None = None,
) -> TableRendering:
    """The table of one proxy from its DispatcherSets and EndpointSlices (by Service name in
    the sets' namespace, by ``namespace/name`` elsewhere); ``now`` is Unix time. A gateway in
    another namespace is used only while ``grants`` allows it: a spec naming one that is not
    is refused (its last good spec renders, without that Service's endpoints)."""
    grants = grants or Grants()
    slices = {key: found for key, found in slices.items() if grants.allows(key)}
    choices = _choose(sets, memory, grants)
    in_table = sorted(
        ((c, c.valid) for c in choices if c.valid is not None), key=lambda p: p[1].spec.set_id
    )
    probing_from, probing, probing_notes = _proxy_wide(in_table, "probing")
    failover_from, failover, failover_notes = _proxy_wide(in_table, "failover")
    results: dict[str, _SetResult] = {}
    for choice in choices:
        name = choice.obj.name
        if choice.valid is None:
            left_out = SetRendering(name, None, None, choice.issues)
            results[name] = _SetResult(left_out, None, {}, None)
            continue
        notes = tuple(n for n in (probing_notes.get(name), failover_notes.get(name)) if n)
        remembered = memory.endpoints.get(name, {})
        results[name] = _render_set(choice, choice.valid, slices, remembered, now, notes=notes)
    table_sets = [s for c, _ in in_table if (s := results[c.obj.name].table_set) is not None]
    wakes = [r.wake for r in results.values() if r.wake is not None]
    return TableRendering(
        data=_table_data(
            table_sets,
            probing,
            failover,
            _routes.table_routes([(c.obj.name, v) for c, v in in_table]),
        ),
        memory=Memory(
            {c.obj.name: c.good for c in choices if c.good is not None},
            {name: r.endpoints for name, r in results.items() if r.endpoints},
        ),
        sets={name: result.rendering for name, result in results.items()},
        probing_from=probing_from,
        failover_from=failover_from,
        next_change=min(wakes) if wakes else None,
    )
