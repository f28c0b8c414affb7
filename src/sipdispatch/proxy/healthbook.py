"""The health of the destinations being served, with one owner: `HealthBook`.

Every fact about a destination's health goes through the book, which folds it into the
destination's record in the table being served (``health.apply`` and its siblings) and is
the only place that logs a change and counts it (Up/Down events, probe results):

* **probe results**: the core's ``ProbeCompleted`` reaches `HealthBook.observe`, the `Prober`
  matches it to the probe it sent and says what the reply means, the book applies it;
* **what real calls say** (passive marking, ``traffic.py``), from the same events. Traffic
  alone never takes the last eligible destination of a set out of service: callers can make
  calls fail at will, and a set with nowhere to send answers every caller 503. Probes can;
* **an admin's set-state** (the control API);
* **Retry-After drains that are due**, and dialogs too old to count, from `run_housekeeping`.

A probe result's whole path: core → ``Engine.on_events`` → `HealthBook.observe` →
``Prober.completed`` → `HealthBook.apply_probe` → the record, the log, the metrics.

The book holds the one `TargetIndex` over the table being served; whoever swaps tables calls
`follow`. Destinations are named by `DestinationKey`. Time is the ``clock`` given (the loop's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sipdispatch.dispatch import health
from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable, Target, TargetIndex
from sipdispatch.proxy.events import CoreEvent, ProbeCompleted
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.settings import ProbeSettings
from sipdispatch.proxy.traffic import TrafficObserver

__all__ = ["HealthBook", "HealthChange", "ProbeOwner"]

log = logging.getLogger(__name__)

_DIRECTION = {health.DestinationUp: " UP", health.DestinationDown: " DOWN"}


class ProbeOwner(Protocol):
    """What the book needs from the prober."""

    def completed(self, event: ProbeCompleted, now: float) -> None:
        """A probe ended: match it, classify it and hand it back to `HealthBook.apply_probe`."""

    def poke(self) -> None:
        """The table or the probing settings changed."""


@dataclass(frozen=True, slots=True)
class HealthChange:
    """One fact folded into a destination's health: what the log and the metrics hear."""

    key: DestinationKey
    target: Target
    source: str  # "probe", "traffic", "drain", "set-state"
    result: health.Result | None  # None: not a result (a drain's end, an admin's set-state)
    previous: str  # the two-letter code before
    code: str  # and after
    event: health.Event | None  # eligibility changed


class HealthBook:
    """Owns the health of the table being served; see the module docstring."""

    def __init__(
        self,
        probing: ProbeSettings,
        *,
        clock: Callable[[], float],
        max_dialog_age: float,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.probing = probing
        self.clock = clock
        self.metrics = metrics
        self.index = TargetIndex()
        self.traffic = TrafficObserver(self.index, lambda: self.probing.passive, max_dialog_age)
        #: failed calls not held against the last eligible destination of their set
        self.spared = 0
        self.probes: ProbeOwner | None = None
        #: hear every change applied (tests, and whatever else wants to)
        self.watchers: list[Callable[[HealthChange], None]] = []

    @property
    def table(self) -> DestinationTable | None:
        return self.index.table

    # ------------------------------------------------------------------ configuration

    def follow(self, table: DestinationTable) -> None:
        """Serve health for ``table`` from now on (a reload carried records across by key)."""
        if self.index.refresh(table) and self.probes is not None:
            self.probes.poke()

    def configure(self, probing: ProbeSettings) -> None:
        """New probing settings (a reload of a YAML config): thresholds apply at once."""
        if probing != self.probing:
            self.probing = probing
            if self.probes is not None:
                self.probes.poke()

    # ------------------------------------------------------------------ facts

    def observe(self, events: Sequence[CoreEvent]) -> None:
        """The core's events: probe completions and what real calls say."""
        now = self.clock()
        traffic = self.traffic
        for event in events:
            if isinstance(event, ProbeCompleted):
                if self.probes is not None:
                    self.probes.completed(event, now)
                continue
            observed = traffic.observe(event, now)
            if observed is not None:
                self.apply_traffic(observed[0], observed[1], now)

    def apply_traffic(self, target: Target, result: health.Result, now: float) -> None:
        """What a call said, unless it would leave the target's set with nowhere to go."""
        record = target.runtime.health
        if health.takes_down(record, result, self.probing.policy) and self._last_eligible(target):
            self.spared += 1
            return
        self.apply(target, result, "traffic", now)

    def _last_eligible(self, target: Target) -> bool:
        table = self.table
        dest_set = table.sets.get(target.identity.set_id) if table is not None else None
        if dest_set is None:
            return False
        return not any(
            other is not target and other.runtime.health.eligible for other in dest_set.targets
        )

    def apply_probe(self, target: Target, result: health.Result, now: float) -> None:
        if self.metrics is not None:
            self.metrics.probe(target.destination.set_id, result)
        self.apply(target, result, "probe", now)

    def apply(self, target: Target, result: health.Result, source: str, now: float) -> None:
        """Fold one result into ``target``'s health."""
        record = target.runtime.health
        previous = record.code
        event = health.apply(record, result, self.probing.policy, now)
        self._changed(target, source, result, previous, event)

    def set_state(self, set_id: int, uri: str, code: str) -> None:
        """An admin's ``set-state``; raises ``LookupError`` or ``InvalidStateError``."""
        table = self.table
        if table is None:
            raise LookupError("no destination table loaded yet")
        target = table.find(set_id, uri)
        previous = target.runtime.health.code
        event = health.set_admin_state(target.runtime.health, code, self.clock())
        log.info("set %d destination %s set to %s by the control API", set_id, uri, code.upper())
        self._changed(target, "set-state", None, previous, event)

    def expire(self, now: float) -> None:
        """End Retry-After drains that are due, and calls counted too long."""
        table = self.table
        if table is not None:
            for target, event in table.expire(now):
                self._changed(target, "drain", None, "DR", event)
        expired = self.traffic.expire(now)
        if expired:
            log.info(
                "%d dialogs outlived %gs without a BYE here: no longer counted as calls",
                expired,
                self.traffic.max_dialog_age,
            )

    async def run_housekeeping(self, interval: float) -> None:
        """`expire` every ``interval`` seconds, for as long as the proxy runs."""
        while True:
            await asyncio.sleep(interval)
            self.expire(self.clock())

    # ------------------------------------------------------------------ telling

    def _changed(
        self,
        target: Target,
        source: str,
        result: health.Result | None,
        previous: str,
        event: health.Event | None,
    ) -> None:
        """Log a change of two-letter code; count eligibility changes (Up/Down events)."""
        dest = target.destination
        record = target.runtime.health
        if self.watchers:
            change = HealthChange(
                target.identity, target, source, result, previous, record.code, event
            )
            for watcher in self.watchers:
                watcher(change)
        if record.code == previous:
            return
        log.log(
            logging.WARNING if isinstance(event, health.DestinationDown) else logging.INFO,
            "set %d destination %s: %s -> %s (%s: %s)%s",
            dest.set_id,
            dest.uri,
            previous,
            record.code,
            source,
            record.reason,
            "" if event is None else _DIRECTION[type(event)],
        )
        if event is not None and self.metrics is not None:
            self.metrics.health_event(dest.set_id, dest.uri, event)
