"""Where the destination table comes from: a YAML config or a Kamailio ``dispatcher.list``.

``TableSource.load()`` reads the file and returns the table configuration, or raises one clear
error naming the file, line and field. ``changed()`` tells when the file was modified, so the
server can reload without a restart and keep serving the last good table when the new one is
broken.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from sipdispatch.proxy.dispatch import configfile, tablefile
from sipdispatch.proxy.dispatch.config import ProxyConfig
from sipdispatch.proxy.dispatch.tableconfig import TableConfig

__all__ = ["LoadedTable", "TableError", "TableSource"]


class TableError(ValueError):
    """The table file could not be used; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class LoadedTable:
    table: TableConfig
    #: the whole configuration, when the source is a YAML file
    config: ProxyConfig | None


class TableSource:
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
        self._stamp: tuple[int, int] | None = None

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
