"""The operator's writes to the API: the only module that calls it (kopf does the watching).

* the table: a ConfigMap ``<proxy>-table`` written by server-side apply (field manager
  ``sipdispatch-operator``): ``table.yaml`` for the proxies, ``operator-state.json`` for the
  operator's memory (last good specs, departed endpoints);
* a DispatcherSet's status, by merge patch of the status subresource (the whole status: the
  operator is its only writer);
* Events about a DispatcherSet (core/v1, as ``kubectl describe`` and ``kubectl get events``
  show them), created once per series and then updated (:mod:`.eventseries`).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sipdispatch.api import models
from sipdispatch.api.names import PROXY_LABEL, TABLE_KEY
from sipdispatch.kube import CONFIG_MAP, EVENT, Kind, Kube, objects

__all__ = [
    "FIELD_MANAGER",
    "MANAGED_BY",
    "MEMORY_KEY",
    "OPERATOR",
    "Api",
    "table_name",
]

FIELD_MANAGER = "sipdispatch-operator"
OPERATOR = "sipdispatch-operator"
MANAGED_BY = "app.kubernetes.io/managed-by"
MEMORY_KEY = "operator-state.json"
DISPATCHERSETS = Kind(models.GROUP, models.VERSION, "dispatchersets")


def table_name(proxy: str) -> str:
    return f"{proxy}-table"


class Api:
    """What the operator writes, over one ``Kube`` connection."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.instance = socket.gethostname()

    async def close(self) -> None:
        await self.kube.close()

    async def apply_table(self, namespace: str, proxy: str, text: str, memory: str) -> str:
        """Write the table of ``proxy``; its new resourceVersion."""
        name = table_name(proxy)
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {PROXY_LABEL: proxy, MANAGED_BY: OPERATOR},
            },
            "data": {TABLE_KEY: text, MEMORY_KEY: memory},
        }
        stored = await objects.apply(self.kube, CONFIG_MAP, body, field_manager=FIELD_MANAGER)
        return str(stored.get("metadata", {}).get("resourceVersion", ""))

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await objects.patch_status(self.kube, DISPATCHERSETS, namespace, name, status)

    async def post_event(
        self,
        involved: Mapping[str, Any],
        kind: str,
        reason: str,
        message: str,
        now: float,
        *,
        count: int = 1,
        first: float | None = None,
    ) -> str:
        """An Event about ``involved`` (a DispatcherSet body), Normal or Warning; its name."""
        meta = involved.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": models.API_VERSION,
                "kind": "DispatcherSet",
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": OPERATOR, "host": self.instance},
            "reportingComponent": OPERATOR,
            "reportingInstance": self.instance,
            "firstTimestamp": _seconds(now if first is None else first),
            "lastTimestamp": _seconds(now),
            "count": count,
        }
        created = await objects.create(self.kube, EVENT, namespace, body)
        return str((created.get("metadata") or {}).get("name", ""))

    async def repeat_event(
        self, namespace: str, name: str, message: str, count: int, now: float
    ) -> None:
        """One more occurrence of the Event ``name``: its count, last time and message."""
        changes = {"message": message[:1024], "count": count, "lastTimestamp": _seconds(now)}
        await objects.merge_patch(self.kube, EVENT, namespace, name, changes)


def _seconds(now: float) -> str:
    # Event timestamps are metav1.Time: whole seconds.
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
