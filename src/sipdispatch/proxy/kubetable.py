"""Kubernetes mode: the destination table from a ConfigMap, followed through the API.

``KubeTableSource`` reads the table the operator renders (a ConfigMap whose ``table.yaml`` is
the ``--config`` format) and follows it with a watch (``sipdispatch.kube.Follow``), so a change
reaches the proxy as soon as the API server has it (a mounted ConfigMap volume lags a minute or
more). The watch resumes from the last resourceVersion and lists again after a 410 Gone. List
and watch carry a ``metadata.name`` field selector, so RBAC can grant access to this one
ConfigMap only (``resourceNames``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sipdispatch.api.names import PROXY_LABEL, TABLE_KEY
from sipdispatch.dispatch import configfile
from sipdispatch.kube import CONFIG_MAP, Changed, Follow, Kube, KubeError
from sipdispatch.proxy.tables import LoadedTable, TableError

__all__ = ["KubeTableSource"]

log = logging.getLogger(__name__)


class KubeTableSource:
    """The operator's rendered table, a ConfigMap, read and watched through the API."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        *,
        key: str = TABLE_KEY,
        algorithm: str | int = "round-robin",
        default_set: int | None = None,
        watch_timeout: float = 300.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.key = key
        self.algorithm = algorithm
        self.default_set = default_set
        self.follow = Follow(
            kube,
            CONFIG_MAP,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout=watch_timeout,
        )
        self.follow.description = self.description
        #: resourceVersion of the ConfigMap whose table is served ("" before the first)
        self.version = ""
        #: name of the proxy, from the ConfigMap's label (reports carry it)
        self.proxy = name.removesuffix("-table")
        self._text: str | None = None

    @property
    def description(self) -> str:
        return f"configmap {self.namespace}/{self.name}"

    async def _find(self) -> dict[str, Any] | None:
        found = await self.follow.list()
        return found[0] if found else None

    async def first(self) -> LoadedTable:
        """The first table: an empty one while no DispatcherSet names this proxy (the
        operator has rendered nothing yet), so that a fresh install becomes ready (GitOps
        tools wait for that) and answers calls 503 until it has sets. Waits (the pod stays
        unready) while the API cannot be read or the table is broken."""
        delay = 0.5
        while True:
            try:
                found = await self._find()
                if found is None:
                    log.info("%s not found: serving no sets until it exists", self.description)
                    return self._empty()
                return self._load(found)
            except TableError as exc:
                log.error("waiting for a valid table: %s", exc)
            except KubeError as exc:
                log.warning("waiting for %s: %s", self.description, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def reload(self) -> LoadedTable:
        try:
            found = await self._find()
        except KubeError as exc:
            raise TableError(f"{self.description}: {exc}") from None
        if found is None:
            if self._text is not None:
                # A deleted ConfigMap keeps the last table, as the watch does.
                raise TableError(f"{self.description}: not found")
            return self._empty()
        return self._load(found)

    def _empty(self) -> LoadedTable:
        self._text = None
        config = configfile.parse_config("sets: []\n", f"{self.description} (absent)")
        return LoadedTable(config.to_table_config(self.algorithm), config)

    async def changes(self) -> AsyncIterator[LoadedTable | TableError]:
        async for event in self.follow.events():
            if isinstance(event, Changed):
                change = self._event(event)
            else:  # listed: the first list, or again after a 410
                change = self._changed(event.objects[0]) if event.objects else None
            if change is not None:
                yield change

    def _event(self, event: Changed) -> LoadedTable | TableError | None:
        if event.type == "DELETED":
            log.warning("%s was deleted: still serving the last table", self.description)
            return None
        return self._changed(event.object)

    def _changed(self, obj: Mapping[str, Any]) -> LoadedTable | TableError | None:
        text = (obj.get("data") or {}).get(self.key)
        if text == self._text:
            self._note(obj)  # same table, newer object (the operator's memory moved)
            return None
        try:
            return self._load(obj)
        except TableError as exc:
            return exc

    def _note(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.version = str(meta.get("resourceVersion", ""))
        self.proxy = (meta.get("labels") or {}).get(PROXY_LABEL) or self.proxy

    def _load(self, obj: Mapping[str, Any]) -> LoadedTable:
        text = (obj.get("data") or {}).get(self.key)
        self._text = text
        if text is None:
            raise TableError(f"{self.description} has no key {self.key!r}")
        try:
            config = configfile.parse_config(text, f"{self.description} {self.key}")
            table = config.to_table_config(self.algorithm)
            if self.default_set is not None:
                table = dataclasses.replace(table, default_set=self.default_set)
        except ValueError as exc:
            raise TableError(str(exc)) from None
        self._note(obj)
        return LoadedTable(table, config)
