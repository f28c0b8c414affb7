"""Challenge affinity: the request retried after a 401/407 goes where the challenge came from.

A back end doing digest authentication (Asterisk, a registrar) checks the credentials against
the nonce it issued itself. The caller retries with a new transaction and the same Call-ID, so
an algorithm that spreads transactions (round-robin, weight, call-load) would take the retry to
another box, which rejects the foreign nonce. The forwarder records which destination
challenged each Call-ID and asks the selector to put that destination first for the Call-ID's
next request (``RequestSelection.affinity``), without moving a round-robin cursor: the retry
is not a new call.

Bounded in size and time: entries live ``ttl`` seconds (a caller retries at once), and past
``size`` entries the oldest go first. Memory of this replica only (see docs/stateful-backends.md).
"""

from __future__ import annotations

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core.records import Hop

__all__ = ["ChallengeAffinity"]


class ChallengeAffinity:
    """Call-ID -> the hop that challenged it, until ``ttl`` seconds later."""

    __slots__ = ("_entries", "size", "ttl")

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size  # 0 turns the feature off
        # Insertion order is expiry order (one ttl for all): the oldest is first.
        self._entries: dict[str, tuple[float, Hop]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, call_id: str, hop: Hop, now: float) -> None:
        """``hop`` challenged ``call_id``: its next request goes there first."""
        if self.size <= 0:
            return
        entries = self._entries
        entries.pop(call_id, None)  # re-inserted at the end: expiry order holds
        entries[call_id] = (now + self.ttl, hop)
        while len(entries) > self.size:
            del entries[next(iter(entries))]
        self._expire(now)

    def lookup(self, call_id: str, now: float) -> DestinationKey | None:
        """The destination that challenged ``call_id``, while that is recent enough."""
        entry = self._entries.get(call_id)
        if entry is None:
            return None
        until, hop = entry
        if until <= now:
            del self._entries[call_id]
            return None
        return hop.key

    @staticmethod
    def put_first(key: DestinationKey, hops: list[Hop]) -> None:
        """Move the hop of ``key`` to the front of ``hops`` (in place) when it is a candidate;
        the others keep their order."""
        for i, hop in enumerate(hops):
            if hop.key == key:
                if i:
                    hops.insert(0, hops.pop(i))
                return

    def forget(self, call_id: str) -> None:
        """The call was answered: nothing more to keep for it."""
        self._entries.pop(call_id, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            call_id = next(iter(entries))
            if entries[call_id][0] > now:
                return
            del entries[call_id]
