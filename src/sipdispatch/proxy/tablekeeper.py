"""The one owner of the table being served: the first one, and every change after it.

Changes come from the `TableSource` (a file that changed, a Kubernetes table that was
updated) and from ``POST /v1/reload``. Each is built into a new `DestinationTable` that
carries learned health, latency and call counts across by destination key, then swapped into
the engine and handed to the health owner; a config's probing and failover sections apply from
the next request on. A change that cannot be used leaves the previous table serving.

Destinations named by DNS are resolved (``namebook.py``) before a table is built, and the
table holds their addresses; `follow_names` re-resolves them as their TTLs run out and
rebuilds the table from the same configuration when an answer changed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.names import expand
from sipdispatch.proxy.engine import Engine
from sipdispatch.proxy.healthbook import HealthBook
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.namebook import NameBook
from sipdispatch.proxy.settings import ProxySettings, probe_settings, with_failover
from sipdispatch.proxy.tables import LoadedTable, TableError, TableSource

__all__ = ["TableKeeper"]

log = logging.getLogger(__name__)


class TableKeeper:
    """Loads tables from ``source`` and applies them to the engine and the health book."""

    def __init__(
        self,
        source: TableSource,
        settings: ProxySettings,
        book: HealthBook,
        metrics: ProxyMetrics | None = None,
        names: NameBook | None = None,
    ) -> None:
        self.source = source
        #: resolves the table's DNS names; None: names stay unresolved (they take no calls)
        self.names = names
        self.settings = settings
        self.book = book
        #: told of each table applied or rejected (the table's age and refusals)
        self.metrics = metrics
        self.loaded: LoadedTable | None = None
        self.table: DestinationTable | None = None
        #: the engine serving the tables; until it is attached, changes are only kept here
        self.engine: Engine | None = None

    async def first(self) -> LoadedTable:
        """Wait for the first table and build it; raises ``TableError``."""
        loaded = await self.source.first()
        await self._resolve(loaded)
        self._build(loaded)
        if self.metrics is not None:
            self.metrics.table_applied(time.time())
        return loaded

    async def reload(self) -> None:
        """Read the table again; on error keep serving the previous table and raise."""
        try:
            loaded = await self.source.reload()
            self._check(loaded)
        except TableError as exc:
            log.error("reload failed, still serving the previous table: %s", exc)
            self._rejected()
            raise
        await self._resolve(loaded)
        self.apply(loaded)

    async def watch(self) -> None:
        """Apply every change the source announces, for as long as the proxy runs."""
        async for change in self.source.changes():
            try:
                if isinstance(change, TableError):
                    raise change
                self._check(change)
            except TableError as error:
                log.error("table change not applied, still serving the previous table: %s", error)
                self._rejected()
                continue
            await self._resolve(change)
            self.apply(change)

    async def follow_names(self, poll: float = 1.0) -> None:
        """Re-resolve names when they are due; rebuild the table when an answer changed.
        Wakes at least every ``poll`` seconds, so that names a reload added are seen."""
        names = self.names
        if names is None:
            return
        while True:
            due = names.next_due()
            delay = poll if due is None else min(poll, max(0.0, due - names.clock()))
            await asyncio.sleep(delay)
            try:
                if await names.refresh_due() and self.loaded is not None:
                    self.apply(self.loaded, why="DNS answers changed")
            except Exception:  # a bug: logged, and the refresh goes on with the next answer
                log.exception("DNS refresh failed, still serving the previous table")

    def apply(self, loaded: LoadedTable, why: str = "") -> None:
        """Swap in a table built from ``loaded``, carrying learned health across."""
        table = self._build(loaded)
        engine = self.engine
        if engine is not None:
            engine.swap_table(table)
            core = engine.core
            settings = with_failover(core.settings, loaded.config)
            if settings is not core.settings:
                core.settings = settings
                log.info(
                    "failover: now up to %d attempts, %s on timeouts",
                    settings.max_attempts,
                    "failing over" if settings.failover_on_timeout else "not failing over",
                )
        if self.metrics is not None:
            self.metrics.table_applied(time.time())
        log.info(
            "table from %s applied%s: %d sets, %d destinations",
            self.source.description,
            f" ({why})" if why else "",
            len(table.sets),
            sum(len(s.targets) for s in table.sets.values()),
        )

    def _check(self, loaded: LoadedTable) -> None:
        """What the engine must refuse before a table is built (a ``socket=`` it lacks)."""
        if self.engine is not None:
            self.engine.check(loaded.table)

    def _rejected(self) -> None:
        if self.metrics is not None:
            self.metrics.table_rejected(time.time())

    async def _resolve(self, loaded: LoadedTable) -> None:
        if self.names is not None:
            await self.names.resolve_new(loaded.table)

    def _build(self, loaded: LoadedTable) -> DestinationTable:
        book = self.book
        book.configure(probe_settings(loaded.config, self.settings))
        config, names = (
            self.names.expand(loaded.table)
            if self.names is not None
            else expand(loaded.table, {})  # no resolver: names take no calls
        )
        table = DestinationTable.build(
            config, self.table, book.clock(), policy=book.probing.policy, names=names
        )
        self.loaded, self.table = loaded, table
        book.follow(table)
        return table
