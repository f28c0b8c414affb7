"""The table keeper: the first table, reloads and changes, applied to the engine and the health
owner with learned health carried across; a broken change leaves the previous table serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from loopback import until
from prometheus_client import CollectorRegistry

from sipdispatch.dispatch import health
from sipdispatch.proxy.core import Signer
from sipdispatch.proxy.engine import Engine
from sipdispatch.proxy.healthbook import HealthBook
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.settings import DEFAULTS, core_settings, probe_settings
from sipdispatch.proxy.tablekeeper import TableKeeper
from sipdispatch.proxy.tables import FileTableSource, LoadedTable, TableError

CONFIG = """\
sets: [{{id: 1, destinations: [{destinations}]}}]
probing: {{interval: {interval}, timeout: 0.5}}
failover: {{codes: ['{code}']}}
"""


class Changes:
    """A table source whose changes the test hands over one by one."""

    def __init__(self, real: FileTableSource) -> None:
        self.real = real
        self.queue: asyncio.Queue[LoadedTable | TableError] = asyncio.Queue()
        self.description = "changes"

    async def first(self) -> LoadedTable:
        return await self.real.first()

    async def reload(self) -> LoadedTable:
        return await self.real.reload()

    async def changes(self) -> AsyncIterator[LoadedTable | TableError]:
        while True:
            yield await self.queue.get()


def write(path: Path, *uris: str, interval: float = 5, code: str = "5xx") -> None:
    dests = ", ".join(f"{{uri: '{uri}'}}" for uri in uris)
    path.write_text(CONFIG.format(destinations=dests, interval=interval, code=code))


def spoil(path: Path) -> None:
    path.write_text("sets: [{id: 1, destinations: [{uri: 'not a uri'}]}]\n")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    write(path, "sip:10.0.0.1", "sip:10.0.0.2")
    return path


def keeper_for(path: Path) -> tuple[TableKeeper, HealthBook]:
    book = HealthBook(
        probe_settings(None, DEFAULTS),
        clock=lambda: 1.0,
        max_dialog_age=1.0,
    )
    source = FileTableSource(path, kamailio_format=False, algorithm=4, default_set=None)
    return TableKeeper(source, DEFAULTS, book), book


async def test_the_first_table_is_built_and_its_probing_configured(config: Path) -> None:
    keeper, book = keeper_for(config)
    loaded = await keeper.first()
    assert keeper.table is not None
    assert book.table is keeper.table
    assert book.probing.interval == 5
    assert loaded.config is not None


async def test_a_reload_carries_health_and_reaches_the_engine(config: Path) -> None:
    keeper, book = keeper_for(config)
    loaded = await keeper.first()
    assert keeper.table is not None
    engine = Engine(
        core_settings(loaded.config, DEFAULTS, {}, ("127.0.0.1", 5060)), keeper.table, Signer()
    )
    keeper.engine = engine
    record = keeper.table.find(1, "sip:10.0.0.1").runtime.health
    health.set_admin_state(record, "ip", 0.0)
    write(config, "sip:10.0.0.1", "sip:10.0.0.3", interval=2, code="502")
    await keeper.reload()
    assert engine.table is keeper.table is book.table
    assert engine.table.find(1, "sip:10.0.0.1").runtime.health is record
    assert record.code == "IP"
    assert book.probing.interval == 2
    assert engine.core.settings.failover_codes == {408, 502}


async def test_a_broken_reload_raises_and_keeps_the_table(config: Path) -> None:
    keeper, book = keeper_for(config)
    await keeper.first()
    served = keeper.table
    spoil(config)
    with pytest.raises(TableError):
        await keeper.reload()
    assert keeper.table is served
    assert book.table is served


async def test_changes_are_applied_as_they_come_and_broken_ones_skipped(config: Path) -> None:
    keeper, book = keeper_for(config)
    source = Changes(FileTableSource(config, kamailio_format=False, algorithm=4, default_set=None))
    keeper.source = source
    await keeper.first()
    watching = asyncio.create_task(keeper.watch())
    try:
        served = keeper.table
        await source.queue.put(TableError("line 1: broken"))
        write(config, "sip:10.0.0.9")
        await source.queue.put(source.real.load())
        await until(lambda: keeper.table is not served)
        assert keeper.table is not None
        assert [t.destination.uri for t in keeper.table.targets()] == ["sip:10.0.0.9"]
        assert book.table is keeper.table
    finally:
        watching.cancel()


async def test_the_tables_age_and_a_rejected_change_show_in_the_metrics(config: Path) -> None:
    registry = CollectorRegistry()
    book = HealthBook(probe_settings(None, DEFAULTS), clock=lambda: 1.0, max_dialog_age=1.0)
    source = FileTableSource(config, kamailio_format=False, algorithm=4, default_set=None)
    keeper = TableKeeper(source, DEFAULTS, book, ProxyMetrics(registry, lambda: None, lambda: 0))

    def sample(name: str, **labels: str) -> float:
        value = registry.get_sample_value(name, labels)
        assert value is not None, name
        return value

    before = time.time()
    await keeper.first()
    applied = sample("sipdispatch_table_last_applied_timestamp_seconds")
    assert before <= applied <= time.time()
    assert sample("sipdispatch_table_last_rejected_timestamp_seconds") == 0
    spoil(config)
    with pytest.raises(TableError):
        await keeper.reload()
    rejected = sample("sipdispatch_table_last_rejected_timestamp_seconds")
    assert rejected >= applied, "the newest table is not the one served"
    assert sample("sipdispatch_table_last_applied_timestamp_seconds") == applied
    assert sample("sipdispatch_table_changes_total", result="rejected") == 1
    write(config, "sip:10.0.0.5")
    await keeper.reload()
    assert sample("sipdispatch_table_last_applied_timestamp_seconds") >= rejected
    assert sample("sipdispatch_table_changes_total", result="applied") == 2
