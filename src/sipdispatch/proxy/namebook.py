"""The one owner of what DNS said about the table's named destinations.

The table keeper asks it to resolve the names of a new table before building it (so a reload
with a new name waits for its first answer, bounded by the resolver's timeout), and to expand
a table into addresses (`dispatch.names.expand`). Between tables, `refresh_due` asks again
each name whose answer is due (`names.next_refresh`: the shortest TTL, within a floor and a
ceiling); when any answer changed, the keeper rebuilds the table from the same configuration,
so health of the addresses that stayed is carried over by key and only new ones start fresh.

What a failure does (the policy, documented in docs/dispatcher.md):

- NXDOMAIN, or a name with no record of the kind asked (the zone's own word): its addresses
  take no new calls at once; the name shows ``failed`` with the reason.
- A timeout, SERVFAIL, REFUSED, no server reachable (a failure to find out): the last good
  addresses keep serving, the name shows ``stale`` with the reason, and it is asked again
  after the floor; once they are ``max_stale`` seconds past their TTL they are dropped too.
- A name never resolved has no addresses and takes no calls.

An address dropped from an answer (or with it) drains (``DR``) for ``drain_grace`` before it
leaves the table, so that the in-dialog requests of its calls still pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from sipdispatch.dispatch import names
from sipdispatch.dispatch.tableconfig import TableConfig
from sipdispatch.proxy.resolver import Outcome, Resolver

__all__ = ["NameBook"]

log = logging.getLogger(__name__)


class NameBook:
    """Answers per `names.NameQuery`, and when each is due again. Time is ``clock``'s."""

    def __init__(
        self,
        resolver: Resolver,
        clock: Callable[[], float],
        policy: names.RefreshPolicy | None = None,
    ) -> None:
        self.resolver = resolver
        self.clock = clock
        self.policy = policy or names.RefreshPolicy()
        self.answers: dict[names.NameQuery, names.Answer] = {}
        self._due: dict[names.NameQuery, float] = {}
        #: addresses that left an answer, draining until the time given
        self.departed: dict[names.NameQuery, dict[names.ResolvedAddress, float]] = {}

    async def resolve_new(self, config: TableConfig) -> None:
        """Forget names ``config`` no longer has; resolve those it adds."""
        wanted = names.queries(config)
        for query in set(self.answers) - wanted:
            del self.answers[query]
            self._due.pop(query, None)
            self.departed.pop(query, None)
        await self._resolve(wanted - set(self.answers))

    def expand(self, config: TableConfig) -> tuple[TableConfig, tuple[names.NameStatus, ...]]:
        return names.expand(config, self.answers, self.departed)

    def next_due(self) -> float | None:
        """When the earliest answer is due again, or a drain ends; None without names."""
        ends = (end for leaving in self.departed.values() for end in leaving.values())
        return min((*self._due.values(), *ends), default=None)

    async def refresh_due(self) -> bool:
        """Ask again every name that is due, end the drains that are over; True when the
        table changes (addresses, a failure that began or ended, a drain that ended)."""
        now = self.clock()
        ended = False
        for query, leaving in list(self.departed.items()):
            for address, end in list(leaving.items()):
                if end <= now:
                    del leaving[address]
                    ended = True
                    log.info("DNS %s: %s:%d drained, removed", query, address.host, address.port)
            if not leaving:
                del self.departed[query]
        return await self._resolve([q for q, due in self._due.items() if due <= now]) or ended

    async def _resolve(self, queries: Iterable[names.NameQuery]) -> bool:
        queries = list(queries)
        if not queries:
            return False
        results = await asyncio.gather(
            *(self.resolver.resolve(q) for q in queries), return_exceptions=True
        )
        now = self.clock()
        changed = False
        for query, result in zip(queries, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation, KeyboardInterrupt: not a DNS answer
                # the resolver answers every DNS outcome itself; this is a bug, kept to a
                # transient failure of one name rather than an exception on the loop
                log.error("DNS %s: resolver failed: %r", query, result)
                outcome = Outcome((), 0.0, f"resolver error: {type(result).__name__}")
            else:
                outcome = result
            changed |= self._learn(query, outcome, now)
        return changed

    def _learn(self, query: names.NameQuery, outcome: Outcome, now: float) -> bool:
        old = self.answers.get(query)
        if not outcome.error:
            # sorted: the same records in another order are the same answer
            addresses = tuple(sorted(outcome.addresses, key=_order))
            new = names.Answer(addresses, now + outcome.ttl, "", now)
        elif (
            outcome.definitive
            or old is None
            or not old.addresses
            or now > old.expires_at + self.policy.max_stale
        ):
            new = names.Answer((), now, outcome.error, old.resolved_at if old else 0.0)
        else:  # transient: keep serving what was last known
            new = names.Answer(old.addresses, old.expires_at, outcome.error, old.resolved_at)
        self.answers[query] = new
        self._due[query] = names.next_refresh(new, now, self.policy)
        self._depart(query, old.addresses if old else (), new.addresses, now)
        changed = old is None or old.addresses != new.addresses or old.error != new.error
        if changed:
            _log_change(query, old, new)
        return changed

    def _depart(
        self,
        query: names.NameQuery,
        before: tuple[names.ResolvedAddress, ...],
        after: tuple[names.ResolvedAddress, ...],
        now: float,
    ) -> None:
        """Addresses that left the answer drain; one that came back is live again."""
        live = {(a.host, a.port) for a in after}
        leaving = self.departed.setdefault(query, {})
        for address in list(leaving):
            if (address.host, address.port) in live:
                del leaving[address]
        for address in before:
            if (address.host, address.port) not in live:
                leaving.setdefault(address, now + self.policy.drain_grace)
        if not leaving:
            del self.departed[query]


def _order(address: names.ResolvedAddress) -> tuple[int, int, str, int]:
    return (address.srv_priority or 0, -(address.srv_weight or 0), address.host, address.port)


def _log_change(query: names.NameQuery, old: names.Answer | None, new: names.Answer) -> None:
    shown = ", ".join(f"{a.host}:{a.port}" for a in new.addresses) or "none"
    if new.state is names.NameState.RESOLVED:
        log.info("DNS %s: %s (TTL %.0f s)", query, shown, new.expires_at - new.resolved_at)
    elif new.state is names.NameState.STALE:
        log.warning("DNS %s: %s; still serving the last answer: %s", query, new.error, shown)
    else:
        log.warning("DNS %s: %s; no addresses, it takes no calls", query, new.error)
