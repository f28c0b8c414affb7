"""Status: what the proxy replicas report, folded into each DispatcherSet's status. Pure.

Each replica writes one ``DispatcherReport`` with the state of every destination it serves.
Reports older than three heartbeats are stale (the replica is gone or cut off) and ignored. Per
destination the status shows the state most replicas report (a tie goes to the worse state), how
many replicas report it, their median latency while it is up or draining (none while it is down:
a down destination's estimate is the probe timeout, not a measurement), and the reason and time
of the change from one of them. A state is a pair: the two-letter code and whether the replica
sends new calls there (``eligible``, as its selection decides). Up means eligible, whatever the
code: ``AX`` coming up is not up. Conditions:

* ``Ready``: at least one destination is up (True), none is or the spec cannot be used
  (False), or no replica has reported yet (Unknown).
* ``Reconciling``: True until a proxy replica reports the set.
* ``Stalled``: the spec cannot be used (reason ``InvalidSpec``); the message names the field
  and the reason, and which generation the table keeps serving. With ``Reconciling``, this is
  what kstatus (Flux, Helm's ``--wait``) and the Argo CD health check in ``examples/gitops/``
  read: Stalled is Failed, Reconciling is InProgress, neither with ``observedGeneration`` equal
  to the generation is Current.
* ``Degraded``: some destination is down (not eligible, neither draining nor disabled),
  replicas disagree, or a gateway has a problem.

Events are returned, not posted: a destination going down or coming back up, starting to
drain, or being removed, and a newly invalid spec. The controller coalesces repeats into
series (:mod:`.eventseries`).
"""

from __future__ import annotations

import ipaddress
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sipdispatch.api import models
from sipdispatch.api import report as _report
from sipdispatch.dispatch import uris as _uris
from sipdispatch.operator import endpoints as _endpoints
from sipdispatch.operator.render import SetRendering

__all__ = [
    "ReplicaView",
    "SetEvent",
    "StatusResult",
    "next_stale",
    "read_reports",
    "replica_views",
    "set_status",
]

UNKNOWN = "Unknown"
NOT_READY = "NotReady"
# Ties between replicas go to the worse state: not eligible first, then in this order.
_SEVERITY = {"IP": 0, "IX": 0, "TP": 1, "TX": 1, "DR": 2, "DX": 3, "AX": 4, "AP": 4}


def _group(state: str, eligible: bool) -> str:
    """Where a destination counts: up (eligible), draining, disabled, down (any other
    state in the table), or Unknown / NotReady."""
    if state in (UNKNOWN, NOT_READY):
        return state
    if eligible:
        return "up"
    return {"DR": "draining", "DX": "disabled"}.get(state, "down")


def _key(set_id: int, uri: str) -> tuple[int, str]:
    try:
        return set_id, _endpoints.identity(uri)
    except ValueError:
        return set_id, uri


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica's current report."""

    replica: str
    table: str
    destinations: Mapping[tuple[int, str], _report.ReportedDestination]


def read_reports(bodies: Iterable[Mapping[str, Any]]) -> list[_report.DispatcherReportSpec]:
    """The reports (DispatcherReport objects) of one proxy, validated once."""
    specs = []
    for body in bodies:
        try:
            specs.append(_report.DispatcherReportSpec.model_validate(body.get("spec") or {}))
        except ValidationError:
            continue  # a report this operator cannot read counts as no report
    return specs


def replica_views(reports: Iterable[_report.DispatcherReportSpec], now: float) -> list[ReplicaView]:
    """The fresh reports, one per replica."""
    views: dict[str, ReplicaView] = {}
    for spec in reports:
        expiry = spec.expires_at()
        if expiry is None or expiry <= now:
            continue
        destinations = {_key(d.set, d.uri): d for d in spec.destinations}
        views[spec.replica] = ReplicaView(spec.replica, spec.table, destinations)
    return [views[name] for name in sorted(views)]


def next_stale(reports: Iterable[_report.DispatcherReportSpec], now: float) -> float | None:
    """When the next fresh report becomes stale (the status must be redone then)."""
    expiries = [e for e in (s.expires_at() for s in reports) if e is not None and e > now]
    return min(expiries) if expiries else None


@dataclass(frozen=True, slots=True)
class SetEvent:
    """A Kubernetes Event to post about the DispatcherSet."""

    type: str  # Normal or Warning
    reason: str
    message: str
    subject: str = ""  # the destination it is about: repeats about it form one series


@dataclass(frozen=True)
class StatusResult:
    status: dict[str, Any]
    events: list[SetEvent]


def _aggregate(
    set_id: int, uri: str, origin: str, replicas: Sequence[ReplicaView]
) -> models.DestinationStatus:
    key = _key(set_id, uri)
    seen = [view.destinations[key] for view in replicas if key in view.destinations]
    if not seen:
        reason = (
            "no proxy replica has reported yet"
            if not replicas
            else f"not in the reports of {len(replicas)} replicas yet"
        )
        return models.DestinationStatus(uri=uri, origin=origin, state=UNKNOWN, reason=reason)
    votes = Counter((d.state, d.eligible) for d in seen)
    state, eligible = max(votes, key=lambda v: (votes[v], not v[1], -_SEVERITY.get(v[0], 0)))
    agreeing = [d for d in seen if (d.state, d.eligible) == (state, eligible)]
    latest = max(agreeing, key=lambda d: _report.parse_timestamp(d.changed_at) or 0.0)
    # A replica's estimate of a destination that does not answer is mostly probe timeouts
    # (the latency algorithm must see it slow), not a round trip: none while it is down,
    # and only from the replicas that see it up or draining.
    measured = _group(state, eligible) in ("up", "draining")
    latencies = [d.latency_ms for d in agreeing if d.latency_ms is not None and measured]
    return models.DestinationStatus(
        uri=uri,
        origin=origin,
        state=state,
        eligible=eligible,
        reason=latest.reason,
        last_change=latest.changed_at,
        latency_ms=round(statistics.median(latencies), 3) if latencies else None,
        seen_by=len(agreeing),
    )


def _by_name(
    set_id: int, dest: models.DestinationStatus, replicas: Sequence[ReplicaView]
) -> list[models.DestinationStatus]:
    """A destination named by DNS: the addresses the replicas resolved it to, each under the
    name, or the name itself (the replicas report why it has none) while it has none."""
    try:
        host = _uris.parse_sip_uri(dest.uri).host_address
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [dest]  # an address
    name = _key(set_id, dest.uri)
    addresses = {
        key: reported.uri
        for view in replicas
        for key, reported in view.destinations.items()
        if reported.name and key != name and _key(set_id, reported.name) == name
    }
    if not addresses:
        return [dest.model_copy(update={"name": dest.uri})]
    return [
        _aggregate(set_id, addresses[key], dest.origin, replicas).model_copy(
            update={"name": dest.uri}
        )
        for key in sorted(addresses)
    ]


def _explained(dest: models.DestinationStatus, rendering: SetRendering) -> str:
    """The operator knows why a destination is held, or an endpoint drains, better than the
    replicas do."""
    for rendered in rendering.destinations:
        if rendered.uri != dest.uri or dest.state not in ("DR", "DX"):
            continue
        if rendered.held:
            return rendered.held
        if dest.state != "DR" or rendered.origin == "static":
            continue
        if rendered.gone_since is not None:
            until = _report.timestamp(rendered.gone_since + rendering.drain_grace)
            return f"endpoint gone; removed from the table at {until}"
        return "endpoint terminating"
    return dest.reason


def _counts(destinations: Sequence[models.DestinationStatus]) -> models.DestinationCounts:
    groups = Counter(_group(d.state, d.eligible) for d in destinations)
    return models.DestinationCounts(
        total=len(destinations) - groups[NOT_READY],
        up=groups["up"],
        draining=groups["draining"],
        down=groups["down"],
        disabled=groups["disabled"],
        unknown=groups[UNKNOWN],
        not_ready=groups[NOT_READY],
    )


@dataclass(frozen=True)
class _Conditions:
    """Builds conditions that keep their transition time while their status holds."""

    previous: Mapping[str, Mapping[str, Any]]
    generation: int
    now: str

    def make(
        self, kind: str, status: models.ConditionStatus, reason: str, message: str
    ) -> models.Condition:
        before = self.previous.get(kind, {})
        changed = before.get("status") != status
        return models.Condition(
            type=kind,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=self.now
            if changed
            else before.get("lastTransitionTime", self.now),
            observed_generation=self.generation,
        )


def _describe(dest: models.DestinationStatus, set_id: int | None) -> str:
    return f"set {set_id} {dest.uri} ({dest.origin})"


def _change(old: tuple[str, bool], dest: models.DestinationStatus) -> str:
    if old[0] != dest.state:
        return f"{old[0]} -> {dest.state}"
    return f"{dest.state}, {'now' if dest.eligible else 'no longer'} eligible for new calls"


def _events(
    before: Mapping[str, tuple[str, bool]],
    after: Sequence[models.DestinationStatus],
    set_id: int | None,
    replicas: int,
) -> list[SetEvent]:
    events = []
    for dest in after:
        old = before.get(dest.uri, (UNKNOWN, False))
        if old == (dest.state, dest.eligible):
            continue
        was, now = _group(*old), _group(dest.state, dest.eligible)
        where = (
            f"{_describe(dest, set_id)}: {_change(old, dest)} on {dest.seen_by}/{replicas} replicas"
        )
        why = f" ({dest.reason})" if dest.reason else ""
        if now == "down" and was != "down":
            events.append(SetEvent("Warning", "DestinationDown", where + why, dest.uri))
        elif now == "up" and was in ("down", "draining", "disabled"):
            events.append(SetEvent("Normal", "DestinationUp", where + why, dest.uri))
        elif now == "draining" and was != "draining":
            events.append(SetEvent("Normal", "DestinationDraining", where + why, dest.uri))
    remaining = {d.uri for d in after}
    for uri, old in before.items():
        if uri not in remaining and old[0] != NOT_READY:
            events.append(
                SetEvent("Normal", "DestinationRemoved", f"set {set_id} {uri} left the table", uri)
            )
    return events


def _progress(
    condition: Callable[[str, models.ConditionStatus, str, str], models.Condition],
    counts: models.DestinationCounts,
    replicas: int,
) -> tuple[models.Condition, models.Condition]:
    """Ready and Reconciling of a valid set: it is reconciled once a replica reports it."""
    if not replicas:
        waiting = "no proxy replica has reported yet"
        return (
            condition("Ready", "Unknown", "NoReports", waiting),
            condition("Reconciling", "True", "AwaitingReports", waiting),
        )
    reconciled = condition("Reconciling", "False", "Reconciled", f"{replicas} replicas report")
    if counts.up:
        up = f"{counts.up} of {counts.total} destinations up on {replicas} replicas"
        return condition("Ready", "True", "DestinationsUp", up), reconciled
    return condition("Ready", "False", "NoDestinationsUp", "no destination is up"), reconciled


def _call_load(rendering: SetRendering, replicas: int) -> str | None:
    """maxLoad is counted by each replica alone (no shared state on the call path): say
    what the replicas reporting now add up to."""
    limits = [d.max_load for d in rendering.destinations if d.max_load]
    if not limits:
        return None
    return (
        f"maxLoad counts calls per proxy replica: {replicas} replicas report, so a "
        f"destination takes up to {replicas} x its maxLoad (for a limit of L calls, set "
        "maxLoad to L / replicas, rounded down)"
    )


def set_status(
    rendering: SetRendering,
    generation: int,
    replicas: Sequence[ReplicaView],
    previous: Mapping[str, Any] | None,
    now: float,
) -> StatusResult:
    """The status of one DispatcherSet and the events its change is worth."""
    previous = previous or {}
    stamp = _report.timestamp(now)
    set_id = rendering.set_id
    destinations = (
        [
            address
            for d in sorted(rendering.destinations, key=lambda d: (d.origin != "static", d.uri))
            for address in _by_name(set_id, _aggregate(set_id, d.uri, d.origin, replicas), replicas)
        ]
        if set_id is not None
        else []
    )
    destinations = [d.model_copy(update={"reason": _explained(d, rendering)}) for d in destinations]
    destinations += [
        models.DestinationStatus(
            uri=e.uri, origin=e.origin, state=NOT_READY, reason="endpoint not ready"
        )
        for e in rendering.not_ready
    ]
    counts = _counts(destinations)
    old_conditions = {c.get("type", ""): c for c in previous.get("conditions") or []}

    condition = _Conditions(old_conditions, generation, stamp).make

    issues = "; ".join(str(i) for i in rendering.issues)
    if issues:
        fallback = (
            f"the table keeps serving generation {rendering.served_generation}"
            if set_id is not None
            else "the set is not in the table"
        )
        why = f"{issues} ({fallback})"
        stalled = condition("Stalled", "True", "InvalidSpec", why)
        ready = condition(
            "Ready", "False", "InvalidSpec" if set_id is not None else "NotInTable", why
        )
        reconciling = condition("Reconciling", "False", "InvalidSpec", "waiting for a valid spec")
    else:
        stalled = condition("Stalled", "False", "Valid", "the spec is in the table")
        ready, reconciling = _progress(condition, counts, len(replicas))
    problems = []
    if counts.down:
        problems.append(("DestinationsDown", f"{counts.down} destinations down"))
    split = [d.uri for d in destinations if d.state != NOT_READY and 0 < d.seen_by < len(replicas)]
    if split:
        problems.append(("ReplicasDisagree", "replicas disagree about " + ", ".join(split)))
    if rendering.warnings:
        problems.append(("Warnings", "; ".join(rendering.warnings)))
    if problems:
        degraded = condition(
            "Degraded", "True", problems[0][0], "; ".join(text for _, text in problems)
        )
    else:
        degraded = condition("Degraded", "False", "AsExpected", "no destination is down")
    status = models.DispatcherSetStatus(
        observed_generation=generation,
        algorithm=rendering.algorithm,
        up_total=f"{counts.up}/{counts.total}",
        replicas=len(replicas),
        counts=counts,
        conditions=[ready, reconciling, stalled, degraded],
        destinations=destinations,
        takes=rendering.takes,
        call_load=_call_load(rendering, len(replicas)),
    )
    before = {
        d.get("uri", ""): (d.get("state", UNKNOWN), bool(d.get("eligible")))
        for d in previous.get("destinations") or []
    }
    events = _events(before, destinations, set_id, len(replicas))
    was_stalled = old_conditions.get("Stalled", {})
    if issues and (
        was_stalled.get("status") != "True" or was_stalled.get("observedGeneration") != generation
    ):
        events.append(SetEvent("Warning", "InvalidSpec", stalled.message))
    return StatusResult(models.dump(status), events)
