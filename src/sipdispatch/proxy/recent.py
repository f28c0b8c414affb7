"""Final answers of finished transactions, kept for a while so that a retransmitted request
gets the same answer again without any transaction state.

The records are flat tuples of immutable values: Python's cycle collector does not track them,
so tens of thousands cost no GC pause. Expiry order lives in one FIFO queue per keep time
(every record in a queue expires in the order it was added), not in the dict: CPython
iterates a dict from its first slot and steps over deleted ones, so a dict used as a queue
(``next(iter(d))`` after deleting from the front) costs O(deleted slots) per look. After an
overload had grown the dict, that scan took 13 % of the proxy's CPU.
"""

from __future__ import annotations

from collections import deque

from sipdispatch.proxy.state import Address

#: (until, final response, transport, address): a plain tuple, as a NamedTuple stays tracked
Answer = tuple[float, bytes, str, Address]


class RecentAnswers:
    """Transaction key -> the answer it was given, until ``keep`` seconds after it was."""

    def __init__(self) -> None:
        self._answers: dict[str, Answer] = {}
        self._queues: dict[float, deque[tuple[float, str]]] = {}  # keep -> (until, key)

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> Answer | None:
        return self._answers.get(key)

    def remember(
        self, key: str, keep: float, now: float, answer: tuple[bytes, str, Address]
    ) -> None:
        """``answer``: the final response, and the transport and address it was sent to."""
        until = now + keep
        data, transport, address = answer
        self._answers[key] = (until, data, transport, address)
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
