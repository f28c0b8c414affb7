"""Active health checks: OPTIONS probes on a schedule, their results folded into health.

Kamailio's ``ds_ping_interval`` with the rough edges filed off:

* **one schedule for every destination** (`ProbeScheduler`): a heap of due times, no task or
  timer per destination, so 10,000 destinations every 5 s cost one heap operation per probe.
  Each destination is probed every ``interval`` seconds, plus or minus ``jitter`` of it, from
  a phase of its own: destinations that appear together (at start, on a reload) are spread
  evenly over the next interval, so probes never leave in synchronized bursts;
* **probes are ordinary client transactions** of the proxy core (``Engine.probe``), with the
  probing ``timeout`` as their deadline; the outcome comes back as a ``ProbeCompleted`` event,
  matched here by its probe id;
* **results go to the table being served now**: the destination is found again by its key in
  the current table when the answer arrives, so a reload in between (which carries health
  across by key) loses nothing, and an answer for a destination that was removed or whose
  address changed is dropped;
* **what a reply means** (`classify`): an accepted reply code is a success (its round trip
  feeds the latency statistics), a 503 with Retry-After is a drain signal, no reply in time
  is a timeout (408), anything else, or a transport error, is a failure.

Which destinations are probed is ``health.wants_probe`` (the probing mode and flag), asked
again at every turn, so a mode change or a destination that starts failing is picked up at
its next slot. `ProbeScheduler` is pure (``now`` is a parameter); `Prober` is the thin asyncio
shell around it, woken by its next due time or by `Prober.poke` when the table changes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sipdispatch.dispatch import health
from sipdispatch.dispatch.config import ProbingSpec, expand_codes
from sipdispatch.dispatch.destinations import DestinationTable, Target, TargetIndex
from sipdispatch.proxy.core import Hop
from sipdispatch.proxy.events import ProbeCompleted

__all__ = [
    "ProbeResult",
    "ProbeScheduler",
    "ProbeSender",
    "ProbeSettings",
    "Prober",
    "classify",
]

log = logging.getLogger(__name__)

#: the prober wakes at most this often (less for short intervals: 1 % of the interval)
_MAX_QUANTUM = 0.02


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """How to probe: from a YAML ``probing`` section or the command line's flags."""

    interval: float = 10.0
    timeout: float = 2.0
    jitter: float = 0.2  # +/- fraction of the interval
    from_uri: str = "sip:sipdispatch@localhost"
    accepted: frozenset[int] = field(default_factory=lambda: frozenset(range(200, 300)))
    policy: health.HealthPolicy = field(default_factory=health.HealthPolicy)

    @classmethod
    def from_spec(cls, spec: ProbingSpec) -> ProbeSettings:
        return cls(
            interval=spec.interval,
            timeout=spec.timeout,
            jitter=spec.jitter,
            from_uri=spec.from_,
            accepted=expand_codes(spec.reply_codes),
            policy=spec.policy(),
        )


def classify(
    status: int, rtt: float | None, retry_after: float | None, settings: ProbeSettings
) -> health.Result:
    """What one probe's outcome says about the destination.

    A 503 with Retry-After is a drain signal even when 503 is an accepted code: the
    destination asked for no traffic for that long.
    """
    if rtt is None:  # the core answered for the destination: no reply in time, or no route
        if status == 408:
            return health.Result.timeout(settings.timeout, "OPTIONS timeout")
        return health.Result.failure(f"OPTIONS {status} (transport error)")
    if status == 503 and retry_after is not None:
        return health.Result.overloaded(retry_after, rtt)
    if status in settings.accepted:
        return health.Result.success(rtt, f"OPTIONS {status}")
    return health.Result.failure(f"OPTIONS {status}", rtt)


class ProbeScheduler:
    """Due times of every probed destination in one heap; pure, ``now`` is a parameter.

    `track` says which keys exist (call it when the table changes); `pop_due` returns the
    keys whose turn has come and schedules each one's next turn ``interval`` later, plus or
    minus ``jitter * interval`` drawn afresh every time. Keys that appear together get
    phases spread evenly over one interval (stratified, in random order).
    """

    def __init__(
        self, interval: float, jitter: float = 0.2, rng: random.Random | None = None
    ) -> None:
        self._check(interval, jitter)
        self.interval = interval
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    @staticmethod
    def _check(interval: float, jitter: float) -> None:
        if interval <= 0:
            raise ValueError(f"probe interval must be > 0, got {interval}")
        if not 0 <= jitter < 1:
            raise ValueError(f"probe jitter must be in [0, 1), got {jitter}")

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def due_at(self, key: str) -> float | None:
        return self._due.get(key)

    def configure(self, interval: float, jitter: float, now: float) -> None:
        """Change the interval or jitter; on a change every key is spread again from ``now``."""
        self._check(interval, jitter)
        if (interval, jitter) == (self.interval, self.jitter):
            return
        self.interval, self.jitter = interval, jitter
        keys = list(self._due)
        self._due.clear()
        self._heap.clear()
        self._spread(keys, now)

    def track(self, keys: Iterable[str], now: float) -> None:
        """The keys to probe from now on: new ones are spread over the next interval,
        vanished ones forgotten, the others keep their phase."""
        wanted = dict.fromkeys(keys)
        for key in [k for k in self._due if k not in wanted]:
            del self._due[key]  # its heap entry becomes stale and is skipped
        self._spread([k for k in wanted if k not in self._due], now)
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(at, key) for key, at in self._due.items()]
            heapq.heapify(self._heap)

    def _spread(self, keys: list[str], now: float) -> None:
        count = len(keys)
        slots = list(range(count))
        self._rng.shuffle(slots)
        for key, slot in zip(keys, slots, strict=True):
            self._put(key, now + self.interval * (slot + self._rng.random()) / count)

    def _put(self, key: str, at: float) -> None:
        self._due[key] = at
        heapq.heappush(self._heap, (at, key))

    def next_due(self) -> float | None:
        """When `pop_due` will next return something (None: nothing tracked)."""
        heap = self._heap
        while heap:
            at, key = heap[0]
            if self._due.get(key) == at:
                return at
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[str]:
        """Keys whose turn has come, each rescheduled one jittered interval later."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            if self._due.get(key) != at:
                continue  # stale: rescheduled or forgotten
            out.append(key)
            step = self.interval * (1.0 + self.jitter * (2.0 * self._rng.random() - 1.0))
            # Keep the key's own phase; after a long stall restart from now instead of
            # firing every missed turn at once.
            base = at if now - at < self.interval else now
            self._put(key, base + step)
        return out


class ProbeSender(Protocol):
    """What the prober needs from the engine."""

    @property
    def table(self) -> DestinationTable: ...

    def hop_for(self, target: Target, set_id: int) -> Hop: ...

    def probe(self, hop: Hop, from_uri: str, timeout: float) -> str: ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome, folded into the health of ``target``."""

    target: Target
    result: health.Result
    previous: str  # the two-letter code before
    code: str  # and after
    event: health.Event | None  # eligibility changed


@dataclass(slots=True)
class _Pending:
    key: str
    record: health.HealthRecord
    sent_at: float


class Prober:
    """Sends the probes `ProbeScheduler` asks for and folds their answers into health.

    ``settings`` is read at every turn (a reload may change it); ``on_result`` hears every
    result applied (metrics, logs). Feed it the core's ``ProbeCompleted`` events with
    `on_probe_completed`; call `poke` after a table swap.
    """

    def __init__(
        self,
        sender: ProbeSender,
        settings: Callable[[], ProbeSettings],
        on_result: Callable[[ProbeResult], None] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.sender = sender
        self.settings = settings
        self.on_result = on_result
        first = settings()
        self.scheduler = ProbeScheduler(first.interval, first.jitter, rng)
        self.index = TargetIndex()
        self._tracked: DestinationTable | None = None
        self._pending: dict[str, _Pending] = {}
        self._in_flight: dict[str, str] = {}  # destination key -> probe id
        # Keys whose turn came while their previous probe was still out (its timeout as long
        # as the interval, say): probed as soon as that one ends, not a whole interval later.
        self._owed: set[str] = set()
        self._early: dict[str, ProbeCompleted] = {}
        self._wake = asyncio.Event()
        self.sent = 0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def poke(self) -> None:
        """The table or the settings changed: look again now."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            due = self.tick(now)
            # Probes due within one quantum leave together: one wake-up serves a handful of
            # them at thousands of probes per second, and delays none by more than 1 %.
            quantum = min(_MAX_QUANTUM, self.scheduler.interval * 0.01)
            delay = 1.0 if due is None else min(1.0, max(quantum, due - now))
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def tick(self, now: float) -> float | None:
        """Follow the table, send the probes that are due; when to come back."""
        settings = self.settings()
        table = self.sender.table
        self.scheduler.configure(settings.interval, settings.jitter, now)
        self.index.refresh(table)
        if table is not self._tracked:
            self._tracked = table
            self.scheduler.track((t.key for t in self.index), now)
        owed = [key for key in self._owed if key not in self._in_flight]
        self._owed.difference_update(owed)
        for key in itertools.chain(owed, self.scheduler.pop_due(now)):
            target = self.index.by_key(key)
            if target is None:
                continue
            if key in self._in_flight:
                self._owed.add(key)
                continue
            if health.wants_probe(target.runtime.health, settings.policy):
                self._send(target, settings, now)
        self._forget_lost(now, settings)
        return self.scheduler.next_due()

    def _send(self, target: Target, settings: ProbeSettings, now: float) -> None:
        dest = target.destination
        hop = self.sender.hop_for(target, dest.set_id)
        probe_id = self.sender.probe(hop, dest.ping_from or settings.from_uri, settings.timeout)
        self.sent += 1
        self._pending[probe_id] = _Pending(target.key, target.runtime.health, now)
        self._in_flight[target.key] = probe_id
        early = self._early.pop(probe_id, None)
        if early is not None:  # completed while being sent (no listener for its transport)
            self.on_probe_completed(early, now)
        self._early.clear()

    def on_probe_completed(self, event: ProbeCompleted, now: float) -> ProbeResult | None:
        """Fold one probe's outcome into the destination's health in the current table."""
        pending = self._pending.pop(event.probe_id, None)
        if pending is None:
            self._early[event.probe_id] = event
            return None
        if self._in_flight.get(pending.key) == event.probe_id:
            del self._in_flight[pending.key]
            if pending.key in self._owed:
                self.poke()
        self.index.refresh(self.sender.table)
        target = self.index.by_key(pending.key)
        if target is None or target.runtime.health is not pending.record:
            log.debug("probe %s: destination %s changed meanwhile", event.probe_id, pending.key)
            return None
        settings = self.settings()
        result = classify(event.status, event.rtt, event.retry_after, settings)
        record = target.runtime.health
        previous = record.code
        change = health.apply(record, result, settings.policy, now)
        outcome = ProbeResult(target, result, previous, record.code, change)
        if self.on_result is not None:
            self.on_result(outcome)
        return outcome

    def _forget_lost(self, now: float, settings: ProbeSettings) -> None:
        """Drop probes whose answer never came (the core always ends them; belt and braces)."""
        limit = now - settings.timeout - 30.0
        if not self._pending or next(iter(self._pending.values())).sent_at > limit:
            return
        for probe_id, pending in list(self._pending.items()):
            if pending.sent_at <= limit:
                del self._pending[probe_id]
                if self._in_flight.get(pending.key) == probe_id:
                    del self._in_flight[pending.key]
