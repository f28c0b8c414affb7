"""Where the destination table comes from.

A ``TableSource`` gives the first table, then every change as it happens; the table keeper
(``tablekeeper.py``) builds each into a live table that keeps learned health, and keeps serving
the last good table when a change is broken. ``FileTableSource`` reads a YAML config or a
Kamailio ``dispatcher.list`` and notices edits by polling the file's size and mtime (a mounted
ConfigMap is replaced, not modified in place, so inotify on the file itself would miss it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sipdispatch.dispatch import configfile, tablefile
from sipdispatch.dispatch.config import ProxyConfig
from sipdispatch.dispatch.tableconfig import TableConfig

__all__ = ["FileTableSource", "LoadedTable", "TableError", "TableSource"]


class TableError(ValueError):
    """The table file could not be used; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class LoadedTable:
    table: TableConfig
    #: the whole configuration, when the source is a YAML file
    config: ProxyConfig | None


class TableSource(Protocol):
    """Gives tables: the first one, explicit reloads, and changes as they happen."""

    @property
    def description(self) -> str:
        """Where tables come from, for logs and the control API."""
        ...

    async def first(self) -> LoadedTable:
        """The first table; raises ``TableError`` when there is none to serve."""
        ...

    async def reload(self) -> LoadedTable:
        """Read the table again now (``sipdispatch-ctl reload``); raises ``TableError``."""
        ...

    def changes(self) -> AsyncIterator[LoadedTable | TableError]:
        """Every later table, or the error that kept a change from being used."""
        ...


class FileTableSource:
    """A table file on disk, in either format."""

    def __init__(
        self,
        path: Path,
        *,
        kamailio_format: bool,
        algorithm: str | int,
        default_set: int | None,
    ) -> None:
        self.path = path
        self.kamailio_format = kamailio_format
        self.algorithm = algorithm
        self.default_set = default_set
        self.poll_interval = 1.0
        self._stamp: tuple[int, int] | None = None

    @property
    def description(self) -> str:
        return str(self.path)

    async def first(self) -> LoadedTable:
        return self.load()

    async def reload(self) -> LoadedTable:
        return self.load()

    async def changes(self) -> AsyncIterator[LoadedTable | TableError]:
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.changed():
                try:
                    yield self.load()
                except TableError as exc:
                    yield exc

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def changed(self) -> bool:
        return self._current_stamp() != self._stamp

    def load(self) -> LoadedTable:
        self._stamp = self._current_stamp()
        try:
            if self.kamailio_format:
                table = tablefile.load_table_file(self.path, algorithm=self.algorithm)
                config = None
            else:
                config = configfile.load_config(self.path)
                table = config.to_table_config(self.algorithm)
            if self.default_set is not None:
                table = dataclasses.replace(table, default_set=self.default_set)
        except ValueError as exc:  # TableFileError, ConfigError and TableConfig checks
            raise TableError(str(exc)) from None
        return LoadedTable(table, config)
