"""Active health checks: OPTIONS probes on a schedule, their replies classified for the health
owner (``healthbook.py``) to apply.

Kamailio's ``ds_ping_interval`` with the rough edges filed off:

* **one schedule for every destination** (`ProbeScheduler`): a heap of due times, no task or
  timer per destination, so 10,000 destinations every 5 s cost one heap operation per probe.
  Each destination is probed every ``interval`` seconds, plus or minus ``jitter`` of it, from
  a phase of its own: destinations that appear together (at start, on a reload) are spread
  evenly over the next interval, so probes never leave in synchronized bursts;
* **probes are ordinary client transactions** of the proxy core (``Engine.probe``), with the
  probing ``timeout`` as their deadline; the outcome comes back as a ``ProbeCompleted`` event,
  which the health owner hands to `Prober.completed`;
* **one record per probe** (`Probe`), from its sending to its end, and at most one probe out
  per destination: a turn that comes while the previous probe is still out (a timeout as long
  as the interval) is owed, and taken as soon as that probe ends;
* **results go to the table being served now**: the destination is found again by its
  `DestinationKey` when the answer arrives, so a reload in between (which carries health
  across by key) loses nothing, and an answer for a destination that was removed or whose
  address changed is dropped;
* **what a reply means** (`classify`): an accepted reply code is a success (its round trip
  feeds the latency statistics), a 503 with Retry-After is a drain signal, no reply in time
  is a timeout (408), anything else, or a transport error, is a failure. Replies from
  anywhere but the probed destination never get here: the core drops them.

Which destinations are probed is ``health.wants_probe`` (the probing mode and flag), asked
again at every turn, so a mode change or a destination that starts failing is picked up at
its next slot. `ProbeScheduler` is pure (``now`` is a parameter); `Prober` is the thin asyncio
shell around it, woken by its next due time or by `Prober.poke` when the table changes.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sipdispatch.dispatch import health
from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable, Target
from sipdispatch.proxy.core import Hop
from sipdispatch.proxy.events import ProbeCompleted
from sipdispatch.proxy.healthbook import HealthBook
from sipdispatch.proxy.settings import ProbeSettings

__all__ = ["Probe", "ProbeScheduler", "ProbeSender", "Prober", "classify"]

log = logging.getLogger(__name__)

#: the prober wakes at most this often (less for short intervals: 1 % of the interval)
_MAX_QUANTUM = 0.02


K = TypeVar("K")


def classify(
    status: int, rtt: float | None, retry_after: float | None, settings: ProbeSettings
) -> health.Result:
    """What one probe's outcome says about the destination.

    A 503 with Retry-After is a drain signal even when 503 is an accepted code: the
    destination asked for no traffic for that long, at most ``max_retry_after`` (a year-long
    Retry-After would otherwise keep it out until an admin steps in).
    """
    if rtt is None:  # the core answered for the destination: no reply in time, or no route
        if status == 408:
            return health.Result.timeout(settings.timeout, "OPTIONS timeout")
        return health.Result.failure(f"OPTIONS {status} (transport error)")
    if status == 503 and retry_after is not None:
        return health.Result.overloaded(min(retry_after, settings.max_retry_after), rtt)
    if status in settings.accepted:
        return health.Result.success(rtt, f"OPTIONS {status}")
    return health.Result.failure(f"OPTIONS {status}", rtt)


class ProbeScheduler(Generic[K]):
    """Due times of every probed destination in one heap; pure, ``now`` is a parameter.

    `track` says which keys exist (call it when the table changes); `pop_due` returns the
    keys whose turn has come and schedules each one's next turn ``interval`` later, plus or
    minus ``jitter * interval`` drawn afresh every time. Keys that appear together get
    phases spread evenly over one interval (stratified, in random order). `again` makes a
    key due once more at once, its phase kept. Keys are hashable and ordered.
    """

    def __init__(
        self, interval: float, jitter: float = 0.2, rng: random.Random | None = None
    ) -> None:
        self._check(interval, jitter)
        self.interval = interval
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, K]] = []
        self._again: dict[K, None] = {}  # an ordered set

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

    def due_at(self, key: K) -> float | None:
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

    def track(self, keys: Iterable[K], now: float) -> None:
        """The keys to probe from now on: new ones are spread over the next interval,
        vanished ones forgotten, the others keep their phase."""
        wanted = dict.fromkeys(keys)
        for key in [k for k in self._due if k not in wanted]:
            del self._due[key]  # its heap entry becomes stale and is skipped
            self._again.pop(key, None)
        self._spread([k for k in wanted if k not in self._due], now)
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(at, key) for key, at in self._due.items()]
            heapq.heapify(self._heap)

    def _spread(self, keys: list[K], now: float) -> None:
        count = len(keys)
        slots = list(range(count))
        self._rng.shuffle(slots)
        for key, slot in zip(keys, slots, strict=True):
            self._put(key, now + self.interval * (slot + self._rng.random()) / count)

    def _put(self, key: K, at: float) -> None:
        self._due[key] = at
        heapq.heappush(self._heap, (at, key))

    def again(self, key: K) -> None:
        """``key`` is due at the next `pop_due` too, its own turns unchanged (its last turn
        came while its previous probe was still out)."""
        if key in self._due:
            self._again[key] = None

    def next_due(self) -> float | None:
        """When `pop_due` will next return something (None: nothing tracked)."""
        if self._again:
            return -math.inf
        heap = self._heap
        while heap:
            at, key = heap[0]
            if self._due.get(key) == at:
                return at
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[K]:
        """Keys whose turn has come, each rescheduled one jittered interval later; first the
        keys due `again`."""
        out = list(self._again)
        self._again.clear()
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

    def hop_for(self, target: Target) -> Hop: ...

    def probe(self, hop: Hop, from_uri: str, timeout: float) -> str: ...


@dataclass(slots=True, eq=False)
class Probe:
    """One OPTIONS probe, from its sending to its end."""

    key: DestinationKey
    #: the health record it is about: when the destination's record was replaced meanwhile
    #: (its address changed in a reload), the reply says nothing about the new one
    record: health.HealthRecord
    sent_at: float
    id: str = ""  # the core's probe id, known once it has been sent
    ended: bool = False
    #: its destination's next turn came while it was out: probe again as soon as it ends
    owed: bool = False


class Prober:
    """Sends the probes `ProbeScheduler` asks for and classifies their replies for ``book``.

    The probing settings, the table and its index are the book's, read at every turn (a
    reload may change them); call `poke` after a change. At most one probe is out per
    destination (`Probe`).
    """

    def __init__(
        self, sender: ProbeSender, book: HealthBook, *, rng: random.Random | None = None
    ) -> None:
        self.sender = sender
        self.book = book
        first = book.probing
        self.scheduler: ProbeScheduler[DestinationKey] = ProbeScheduler(
            first.interval, first.jitter, rng
        )
        self._scheduled: DestinationTable | None = None  # the table the schedule follows
        self._out: dict[DestinationKey, Probe] = {}  # probes out, by destination
        self._ids: dict[str, Probe] = {}  # the same probes by id, oldest first
        self._sending: Probe | None = None
        self._wake = asyncio.Event()
        self.sent = 0

    @property
    def in_flight(self) -> int:
        return len(self._ids)

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
        book = self.book
        settings = book.probing
        table = book.table
        if table is None:
            return None
        self.scheduler.configure(settings.interval, settings.jitter, now)
        if table is not self._scheduled:
            self._scheduled = table
            self.scheduler.track(book.index.keys(), now)
        for key in self.scheduler.pop_due(now):
            out = self._out.get(key)
            if out is not None:
                out.owed = True
                continue
            target = book.index.get(key)
            if target is not None and health.wants_probe(target.runtime.health, settings.policy):
                self._send(key, target, settings, now)
        self._forget_lost(now, settings)
        return self.scheduler.next_due()

    def _send(
        self, key: DestinationKey, target: Target, settings: ProbeSettings, now: float
    ) -> None:
        dest = target.destination
        hop = self.sender.hop_for(target)
        probe = self._sending = Probe(key, target.runtime.health, now)
        try:
            probe.id = self.sender.probe(hop, dest.ping_from or settings.from_uri, settings.timeout)
        finally:
            self._sending = None
        self.sent += 1
        if not probe.ended:  # else: it ended while being sent (no listener for its transport)
            self._out[key] = probe
            self._ids[probe.id] = probe

    def completed(self, event: ProbeCompleted, now: float) -> None:
        """One probe ended: what its reply says goes to the destination in the current table."""
        probe = self._ids.pop(event.probe_id, None)
        if probe is not None:
            del self._out[probe.key]
        elif self._sending is not None:
            probe = self._sending
        else:
            return  # given up on as lost meanwhile
        probe.ended = True
        if probe.owed:
            self.scheduler.again(probe.key)
            self.poke()
        target = self.book.index.get(probe.key)
        if target is None or target.runtime.health is not probe.record:
            log.debug("probe %s: destination %s changed meanwhile", event.probe_id, probe.key)
            return
        result = classify(event.status, event.rtt, event.retry_after, self.book.probing)
        self.book.apply_probe(target, result, now)

    def _forget_lost(self, now: float, settings: ProbeSettings) -> None:
        """Drop probes whose answer never came (the core always ends them; belt and braces)."""
        limit = now - settings.timeout - 30.0
        if not self._ids or next(iter(self._ids.values())).sent_at > limit:
            return
        for probe_id, probe in list(self._ids.items()):
            if probe.sent_at <= limit:
                del self._ids[probe_id]
                del self._out[probe.key]
