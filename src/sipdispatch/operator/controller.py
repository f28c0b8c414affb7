"""The reconciler: one task that renders tables and writes statuses, level-based.

kopf keeps the indexes (every DispatcherSet, EndpointSlice, DispatcherReport and rendered
table, by namespace and proxy or Service) and calls the event handlers, which only mark a
proxy dirty (``touch``). This task takes dirty proxies after a short debounce (a rolling
update changes many EndpointSlice endpoints at once) and, for each, renders the table from the
indexes as they are now, writes it if it changed, and writes each set's status if it
changed. So no event is ever "missed": every pass starts from the whole current state.

The table is written at once (endpoint changes must reach the proxies in well under a
second); a set's status at most once per ``status_interval`` (changes in between are
coalesced). Timers bring a proxy back when a drain grace ends or a replica's report turns
stale.

Only a leading controller writes (``lead``: the holder of the operator's Lease); one that
stands by keeps its indexes warm and, once it leads, renders every proxy it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sipdispatch.api import report as _report
from sipdispatch.api.names import TABLE_KEY
from sipdispatch.kube import KubeError
from sipdispatch.operator import k8s, render, status
from sipdispatch.operator.eventseries import EventSeries, SeriesKey, counted
from sipdispatch.operator.memory import Memory
from sipdispatch.operator.metrics import OperatorMetrics

__all__ = ["Controller", "Indexes"]

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, proxy) or (namespace, service)


@dataclass
class Indexes:
    sets: Mapping[Key, Iterable[Mapping[str, Any]]]
    slices: Mapping[Key, Iterable[Mapping[str, Any]]]
    reports: Mapping[Key, Iterable[Mapping[str, Any]]]
    tables: Mapping[Key, Iterable[Mapping[str, Any]]]
    #: (namespace, Service) -> the namespaces its grant annotation names
    grants: Mapping[Key, Iterable[frozenset[str]]] = field(default_factory=dict)


@dataclass
class _SetMemory:
    sent: dict[str, Any] | None = None  # the status last written
    sent_at: float = 0.0


@dataclass
class Controller:
    api: k8s.Api
    status_interval: float = 1.0
    debounce: float = 0.02
    clock: Callable[[], float] = time.time
    indexes: Indexes | None = None
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    #: repeats of an Event update it instead of adding one (a flapping gateway)
    events: EventSeries = field(default_factory=EventSeries)
    #: whether this controller writes (without leader election: always)
    leading: bool = True
    _dirty: set[Key] = field(default_factory=set)
    _timers: dict[Key, float] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _memory: dict[Key, Memory] = field(default_factory=dict)
    _written: dict[Key, tuple[str, str]] = field(default_factory=dict)
    _sets: dict[tuple[str, str], _SetMemory] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    #: the grants last seen, by (namespace, Service): whom to render again when one changes
    _grants: dict[Key, frozenset[str]] = field(default_factory=dict)

    # ------------------------------------------------------------------ from handlers

    def bind(self, indexes: Indexes) -> None:
        self.indexes = indexes

    def touch(self, namespace: str, proxy: str | None = None) -> None:
        """Mark ``proxy`` (or every proxy known in ``namespace``) for a pass."""
        if proxy is not None:
            self._dirty.add((namespace, proxy))
        else:
            self._dirty.update(k for k in self._known() if k[0] == namespace)
        self._wake.set()

    def grant_changed(self, namespace: str, service: str, granted: frozenset[str]) -> None:
        """A Service's grant annotation was seen: the namespaces it names now or named
        before render again."""
        key = (namespace, service)
        before = self._grants.pop(key, frozenset())
        if granted:
            self._grants[key] = granted
        for other in before | granted:
            self.touch(other)

    def slice_changed(self, namespace: str, service: str) -> None:
        """An EndpointSlice of ``service`` changed: its namespace and those it grants."""
        for other in {namespace} | self._grants.get((namespace, service), frozenset()):
            self.touch(other)

    def lead(self, leading: bool) -> None:
        """Start or stop writing; a new leader renders every proxy it knows."""
        self.leading = leading
        if leading:
            self._dirty.update(self._known())
        self._wake.set()

    def _known(self) -> set[Key]:
        known = set(self._written)
        if self.indexes is not None:
            known.update(self.indexes.sets)
            known.update(self.indexes.tables)
        return known

    # ------------------------------------------------------------------ the task

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.api.close()

    async def run(self) -> None:
        while True:
            now = self.clock()
            due = [k for k, at in self._timers.items() if at <= now]
            if not self.leading:
                self._wake.clear()
                await self._wake.wait()  # lead() wakes it
                continue
            if not self._dirty and not due:
                wait = min(self._timers.values(), default=now + 60.0) - now
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, wait))
                continue
            await asyncio.sleep(self.debounce)  # let a burst of events land first
            now = self.clock()
            keys = self._dirty | {k for k, at in self._timers.items() if at <= now}
            self._dirty = set()
            for key in keys:
                self._timers.pop(key, None)
            for key in sorted(keys):
                if not self._still_leading():
                    self._dirty.add(key)  # for when this process leads again
                    continue
                try:
                    await self.reconcile(*key)
                except (KubeError, OSError, TimeoutError) as exc:
                    log.warning("proxy %s/%s: %s; trying again in 2s", *key, exc)
                    self.metrics.reconciled(ok=False, now=self.clock())
                    self._later(key, self.clock() + 2.0)
                except Exception:
                    log.exception("proxy %s/%s: reconciling failed", *key)
                    self.metrics.reconciled(ok=False, now=self.clock())
                    self._later(key, self.clock() + 5.0)
                else:
                    self.metrics.reconciled(ok=True, now=self.clock())

    def _still_leading(self) -> bool:
        # Read again between writes: the Lease may have been lost during the last one.
        return self.leading

    def _later(self, key: Key, when: float | None) -> None:
        if when is not None:
            self._timers[key] = min(when, self._timers.get(key, when))

    # ------------------------------------------------------------------ one proxy

    async def reconcile(self, namespace: str, proxy: str) -> None:
        indexes = self.indexes
        if indexes is None:
            return
        key = (namespace, proxy)
        bodies = list(indexes.sets.get(key) or ())
        grants = render.Grants(
            namespace,
            {
                f"{ns}/{service}": frozenset().union(*stored)
                for (ns, service), stored in indexes.grants.items()
            },
        )
        slices: dict[str, list[Mapping[str, Any]]] = {}
        for (ns, service), store in indexes.slices.items():
            if ns == namespace:
                slices[service] = list(store)
            if grants.allows(f"{ns}/{service}"):  # a gateway may name its namespace too
                slices[f"{ns}/{service}"] = list(store)
        table = next(iter(indexes.tables.get(key) or ()), None)
        if key not in self._memory:
            # After a restart the memory comes from the table itself.
            data = (table or {}).get("data") or {}
            self._memory[key] = Memory.from_json(data.get(k8s.MEMORY_KEY))
        now = self.clock()
        rendering = render.render(
            (render.SetObject.from_body(b) for b in bodies),
            slices,
            self._memory[key],
            now,
            grants,
        )
        text, memory = rendering.text, rendering.memory.to_json()
        data = (table or {}).get("data") or {}
        current = (data.get(TABLE_KEY), data.get(k8s.MEMORY_KEY))
        if not bodies and table is None and key not in self._written:
            return  # nothing to render, and nothing rendered before
        # Compared with what the index holds, not with what was last written: a table edited
        # or deleted by hand is written again. (Right after a write the index may still hold
        # the previous version; the repeated apply is then a no-op for the API server.)
        if (text, memory) != current:
            version = await self.api.apply_table(namespace, proxy, text, memory)
            self.metrics.wrote_table(namespace, proxy, self.clock())
            log.info(
                "table %s/%s written (resourceVersion %s): %d sets",
                namespace,
                k8s.table_name(proxy),
                version,
                len(rendering.data.get("sets", [])),
            )
        self._written[key] = (text, memory)
        self._memory[key] = rendering.memory
        self._later(key, rendering.next_change)
        reports = status.read_reports(indexes.reports.get(key) or ())
        self._later(key, status.next_stale(reports, now))
        views = status.replica_views(reports, now)
        for body in bodies:
            await self._status(key, body, rendering, views, now)
        present = {
            (ns, str((b.get("metadata") or {}).get("name")))
            for (ns, _), stored in indexes.sets.items()
            for b in stored
        }
        for forgotten in set(self._sets) - present:
            del self._sets[forgotten]

    async def _status(
        self,
        key: Key,
        body: Mapping[str, Any],
        rendering: render.TableRendering,
        views: list[status.ReplicaView],
        now: float,
    ) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        namespace = key[0]
        memory = self._sets.setdefault((namespace, name), _SetMemory())
        set_rendering = rendering.sets.get(name)
        if set_rendering is None:
            return
        previous = memory.sent if memory.sent is not None else body.get("status")
        result = status.set_status(
            set_rendering, int(meta.get("generation") or 0), views, previous, now
        )
        if result.status == previous:
            return
        wait = memory.sent_at + self.status_interval - now
        if wait > 0:
            self._later(key, now + wait)  # coalesced into a later write
            return
        await self.api.patch_status(namespace, name, result.status)
        self.metrics.status_writes.inc()
        memory.sent, memory.sent_at = result.status, now
        for event in result.events:
            log.info("%s/%s %s: %s", namespace, name, event.reason, event.message)
            try:
                await self._post(body, (namespace, name), event, now)
            except KubeError as exc:
                log.warning("event %s about %s/%s not posted: %s", event.reason, *key, exc)

    async def _post(
        self, body: Mapping[str, Any], where: tuple[str, str], event: status.SetEvent, now: float
    ) -> None:
        """Post ``event``, or count it into the Event of its series."""
        series: SeriesKey = (*where, event.type, event.reason, event.subject)
        occurrence = self.events.record(series, now)
        message = counted(event.message, occurrence, _report.timestamp(occurrence.first))
        if occurrence.name is not None:
            try:
                await self.api.repeat_event(
                    where[0], occurrence.name, message, occurrence.count, now
                )
                return
            except KubeError as exc:
                if exc.status != 404:
                    raise
            # The Event expired or was deleted: a new series starts with a new Event.
            self.events.lost(series)
            occurrence = self.events.record(series, now)
            message = event.message
        name = await self.api.post_event(
            body,
            event.type,
            event.reason,
            message,
            now,
            count=occurrence.count,
            first=occurrence.first,
        )
        self.events.created(series, name)
