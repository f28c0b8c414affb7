"""When the core must act next: the timers of its live records, and the recent answers.

``Deadlines`` is one heap of ``(deadline, timer id)`` entries with lazy deletion. The entries are
flat tuples the cycle collector ignores and that keep nothing alive: only records with a timer
running are in the id map, so a finished transaction leaves it and is freed at once, and its
stale entries are skipped when they pop. Compaction bounds the stale ones.

``RecentAnswers`` keeps the final answers of finished transactions for a while, so that a
retransmitted request gets the same answer again without any transaction state. Its records
are flat tuples of strings and numbers, the listener named by its id: the cycle collector stops
tracking such a tuple the first time it looks at it, so tens of thousands cost no GC pause. (A
record holding the listener itself stays tracked for life: 8 s of answers at 1,880 calls/s,
15,000 records, made every full collection of the core's state take 6-8 ms instead of 0.5.)
Expiry order lives in one FIFO queue per keep time (every record in a queue expires in the
order it was added), not in the dict: CPython iterates a dict from its first slot and steps
over deleted ones, so a dict used as a queue (``next(iter(d))`` after deleting from the front)
costs O(deleted slots) per look. After an overload had grown the dict, that scan took 13 % of
the proxy's CPU.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from sipdispatch.proxy.core.records import Address, Listener

__all__ = ["Answer", "Deadlines", "RecentAnswers", "Timed"]

#: (until, final response, listener id, host, port): a plain tuple of strings and numbers
Answer = tuple[float, bytes, str, str, int]


class Timed:
    """A record with one ``deadline``: a transaction, a branch or a probe."""

    __slots__ = ("scheduled", "timer_id")

    def __init__(self) -> None:
        self.scheduled: float | None = None  # the deadline its live heap entry carries
        self.timer_id = 0  # its handle in ``Deadlines`` (0: none yet)

    @property
    def deadline(self) -> float | None:
        return None


class Deadlines:
    """The records with a timer running, in deadline order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._timed: dict[int, Timed] = {}
        self._ids = itertools.count(1)  # 0 means "none yet"

    def schedule(self, target: Timed) -> None:
        """Follow ``target.deadline``, after whatever just changed it."""
        deadline = target.deadline
        if deadline is None:
            self.unschedule(target)
        elif deadline != target.scheduled:
            if not target.timer_id:
                target.timer_id = next(self._ids)
            self._timed[target.timer_id] = target
            target.scheduled = deadline
            heapq.heappush(self._heap, (deadline, target.timer_id))
            if len(self._heap) > 4 * len(self._timed) + 1024:
                self._compact()

    def unschedule(self, target: Timed) -> None:
        """Forget a record's timers: its heap entries become stale and hold nothing."""
        target.scheduled = None
        self._timed.pop(target.timer_id, None)

    def next_deadline(self) -> float | None:
        while self._heap:
            at, timer_id = self._heap[0]
            target = self._timed.get(timer_id)
            if target is not None and target.scheduled == at:
                return at
            heapq.heappop(self._heap)  # stale: the record was rescheduled or finished
        return None

    def pop_due(self, now: float) -> Timed | None:
        """The next record whose deadline has come (its timer is cleared), or None."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, timer_id = heapq.heappop(heap)
            target = self._timed.get(timer_id)
            if target is not None and target.scheduled == at:
                target.scheduled = None
                return target
        return None

    def _compact(self) -> None:
        """Rebuild the heap from live entries: stale ones (a Timer C set 180 s ahead, then
        answered) would otherwise pile up until their time comes. Amortised O(1) per push."""
        self._heap = [
            (target.scheduled, timer_id)
            for timer_id, target in self._timed.items()
            if target.scheduled is not None
        ]
        heapq.heapify(self._heap)


class RecentAnswers:
    """Transaction key -> the answer it was given, until ``keep`` seconds after it was."""

    def __init__(self) -> None:
        self._answers: dict[str, Answer] = {}
        self._queues: dict[float, deque[tuple[float, str]]] = {}  # keep -> (until, key)
        self._listeners: dict[str, Listener] = {}  # the listeners records name, by id

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> tuple[bytes, Listener, Address] | None:
        """The answer remembered for ``key``: the response, its listener and address."""
        record = self._answers.get(key)
        if record is None:
            return None
        return record[1], self._listeners[record[2]], (record[3], record[4])

    def remember(
        self, key: str, keep: float, now: float, answer: tuple[bytes, Listener, Address]
    ) -> None:
        """``answer``: the final response, and the listener and address it was sent to."""
        until = now + keep
        data, listener, (host, port) = answer
        listeners = self._listeners
        name = listener.id
        if listeners.get(name) is not listener:
            listeners[name] = listener  # a listener made anew under its id (a reload)
        self._answers[key] = (until, data, name, host, port)
        queue = self._queues.get(keep)
        if queue is None:
            queue = self._queues[keep] = deque()
        queue.append((until, key))

    def next_expiry(self) -> float | None:
        """When the oldest record expires (None when there is none)."""
        soonest: float | None = None
        for queue in self._queues.values():
            if queue and (soonest is None or queue[0][0] < soonest):
                soonest = queue[0][0]
        return soonest

    def prune(self, now: float) -> None:
        """Forget every record whose time has come."""
        answers = self._answers
        for queue in self._queues.values():
            while queue and queue[0][0] <= now:
                until, key = queue.popleft()
                answer = answers.get(key)
                if answer is not None and answer[0] == until:  # not remembered again since
                    del answers[key]
