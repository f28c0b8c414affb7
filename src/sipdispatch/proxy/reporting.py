"""Reporting this replica's view of its destinations to Kubernetes, for the operator's status.

Each replica owns one ``DispatcherReport`` object, ``<proxy>-<replica>``, which it alone
writes (server-side apply with its own field manager), so replicas never overwrite each
other. A report is written when something a user would care about changed (a state, its
reason, a first latency measurement, a new table) but not more often than ``min_interval``
(changes in between are coalesced into the next report), and otherwise every ``heartbeat``
seconds, so the operator can tell a live replica from a dead one. When the proxy stops, its
report is deleted; a replica killed outright leaves a report that the operator ignores once
it is three heartbeats old (and that Kubernetes removes with the pod, when ``POD_UID`` is set
from the downward API and the report names the pod as its owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sipdispatch.api import report as _report
from sipdispatch.api.names import GROUP, VERSION
from sipdispatch.dispatch.destinations import DestinationTable, Target
from sipdispatch.dispatch.names import NameState
from sipdispatch.kube import Kind, KubeError, objects
from sipdispatch.proxy.kubetable import KubeTableSource
from sipdispatch.proxy.wallclock import clock_offset

if TYPE_CHECKING:
    from sipdispatch.proxy.server import ProxyServer

__all__ = ["Companion", "ReportSchedule", "Reporter", "companions", "report_body"]

log = logging.getLogger(__name__)

FIELD_MANAGER = "sipdispatch-proxy"
REPORTS = Kind(GROUP, VERSION, "dispatcherreports")
WITHDRAW_TIMEOUT = 2.0  # seconds a stopping replica gives the deletion of its report
POLL_INTERVAL = 0.2  # how often the table is looked at for changes (cheap: no I/O)


@dataclass
class ReportSchedule:
    """When to write the next report. Sans-I/O: time is a parameter."""

    min_interval: float = 1.0
    heartbeat: float = 30.0
    last_sent: float | None = None
    sent: Hashable = None
    retry_at: float | None = None

    def due(self, fingerprint: Hashable, now: float) -> bool:
        if self.retry_at is not None and now < self.retry_at:
            return False
        if self.last_sent is None:
            return True
        if fingerprint != self.sent:
            return now >= self.last_sent + self.min_interval
        return now >= self.last_sent + self.heartbeat

    def done(self, fingerprint: Hashable, now: float) -> None:
        self.last_sent, self.sent, self.retry_at = now, fingerprint, None

    def failed(self, now: float, attempt: int) -> None:
        """Back off: 1, 2, 4 ... seconds, at most a heartbeat."""
        self.retry_at = now + min(self.heartbeat, float(2 ** min(attempt, 10)))


def fingerprint(table: DestinationTable, version: str) -> Hashable:
    """What makes a report worth writing early (latency values alone do not). Eligibility
    is part of it: ``AX`` coming up and ``AX`` active are one code."""
    return (
        version,
        tuple(
            (
                t.identity,
                t.runtime.health.code,
                t.eligible,
                t.runtime.health.reason,
                t.runtime.health.latency.estimate is not None,
            )
            for t in table.targets()
        ),
        tuple((n.set_id, n.uri, n.state, n.reason) for n in table.names),
    )


def report_name(proxy: str, replica: str) -> str:
    """A valid object name for the report of ``replica`` (a DNS subdomain)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{proxy}-{replica}".lower()).strip("-.")
    return name[:253].rstrip("-.")


def report_body(
    table: DestinationTable,
    *,
    proxy: str,
    replica: str,
    namespace: str,
    version: str,
    heartbeat: float,
    wall_now: float,
    clock_offset: float,
    pod_uid: str | None = None,
) -> dict[str, Any]:
    """The DispatcherReport object of this replica (an apply patch: the whole object).

    ``clock_offset`` turns the loop's monotonic times into Unix time.
    """
    spec = _report.DispatcherReportSpec(
        proxy=proxy,
        replica=replica,
        table=version,
        reported_at=_report.timestamp(wall_now),
        heartbeat_seconds=heartbeat,
        destinations=reported(table, clock_offset),
    )
    return spec.manifest(name=report_name(proxy, replica), namespace=namespace, pod_uid=pod_uid)


def reported(table: DestinationTable, clock_offset: float) -> list[_report.ReportedDestination]:
    """Every target of ``table``, then every DNS name without addresses (state IX: it takes
    no calls, and the reason says why)."""
    stale = {
        (n.set_id, n.uri): f"; dns: {n.reason}, last answer kept"
        for n in table.names
        if n.state is NameState.STALE
    }
    rows = [
        _reported(t, clock_offset, stale.get((t.destination.set_id, t.destination.name or "")))
        for t in table.targets()
    ]
    rows += [
        _report.ReportedDestination(
            set=n.set_id,
            uri=n.uri,
            name=n.uri,
            state="IX",
            eligible=False,
            reason=f"dns: {n.reason} ({n.query})",
        )
        for n in table.names
        if not n.addresses
    ]
    return rows


def _reported(
    target: Target, clock_offset: float, dns: str | None = None
) -> _report.ReportedDestination:
    health = target.runtime.health
    estimate = health.latency.estimate
    return _report.ReportedDestination(
        set=target.destination.set_id,
        uri=target.destination.uri,
        name=target.destination.name,
        state=health.code,
        eligible=target.eligible,  # what selection decides, not a reading of the code
        reason=health.reason + (dns or ""),
        changed_at=_report.timestamp(health.changed_at + clock_offset)
        if health.changed_at
        else None,
        latency_ms=None if estimate is None else round(estimate * 1000, 3),
    )


@dataclass
class Reporter:
    """The companion task: watches the live table and writes this replica's report."""

    source: KubeTableSource
    replica: str
    schedule: ReportSchedule = field(default_factory=ReportSchedule)
    pod_uid: str | None = None

    @property
    def name(self) -> str:
        return report_name(self.source.proxy, self.replica)

    async def run(self, server: ProxyServer) -> None:
        attempt = 0
        try:
            while True:
                table = server.table
                now = server.now()
                if table is not None:
                    mark = fingerprint(table, self.source.version)
                    if self.schedule.due(mark, now):
                        try:
                            await self._send(table, server.now())
                            if attempt:
                                log.info("report %s written again", self.name)
                            attempt = 0
                            self.schedule.done(mark, now)
                        except KubeError as exc:
                            if attempt == 0 or attempt % 10 == 0:
                                log.warning("cannot write report %s: %s", self.name, exc)
                            attempt += 1
                            self.schedule.failed(now, attempt)
                await asyncio.sleep(POLL_INTERVAL)
        finally:
            await self._withdraw()

    async def _send(self, table: DestinationTable, now: float) -> None:
        wall = time.time()
        body = report_body(
            table,
            proxy=self.source.proxy,
            replica=self.replica,
            namespace=self.source.namespace,
            version=self.source.version,
            heartbeat=self.schedule.heartbeat,
            wall_now=wall,
            clock_offset=clock_offset(),
            pod_uid=self.pod_uid,
        )
        await objects.apply(self.source.kube, REPORTS, body, field_manager=FIELD_MANAGER)

    async def _withdraw(self) -> None:
        """A replica that stops takes its report with it (best effort, at most 2 s).

        This runs when the proxy stops and cancels this task: the server waits for its tasks
        to end, so the deletion is awaited, not cut short.
        """
        if self.schedule.last_sent is None:
            return
        try:
            async with asyncio.timeout(WITHDRAW_TIMEOUT):
                await objects.delete(self.source.kube, REPORTS, self.source.namespace, self.name)
        except (KubeError, TimeoutError) as exc:
            log.info("report %s not withdrawn: %s", self.name, exc)


Companion = Callable[["ProxyServer"], Coroutine[Any, Any, None]]


def companions(source: KubeTableSource, reporter: Reporter | None) -> Sequence[Companion]:
    """What Kubernetes mode runs beside the proxy: the reporter (if any), and, when the
    proxy stops, closing the API client once the report is withdrawn."""

    async def kubernetes_mode(server: ProxyServer) -> None:
        try:
            if reporter is not None:
                try:
                    await reporter.run(server)
                except Exception:  # a bug in reporting must not close the table's watch too
                    log.exception("reporting stopped; the table is still followed")
            await asyncio.Event().wait()  # the API client stays open until the proxy stops
        finally:
            with contextlib.suppress(Exception):
                await source.kube.close()

    return (kubernetes_mode,)
