"""Kubernetes mode's table source, over sipdispatch.kube's client and watch.

The watch protocol's corner cases (a 410 Gone, a broken table in between) come from a small
scripted API server on loopback, because a real API server cannot be made to expire a watch
on demand; the client is the real one, with a token kubeconfig pointing at that server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubeconfigs import kubeconfig
from sipdispatch.kube import Kube, KubeConfigError, locate
from sipdispatch.proxy.kubetable import KubeTableSource
from sipdispatch.proxy.tables import LoadedTable, TableError


def table(uri: str) -> str:
    return f"sets:\n- id: 1\n  destinations:\n  - uri: {uri}\n"


def configmap(rv: int, text: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "sipdispatch-table",
            "resourceVersion": str(rv),
            "labels": {"sipdispatch.io/proxy": "edge"},
        },
        "data": {"table.yaml": text},
    }


class ScriptedApi:
    """Lists answer the current ConfigMap; each watch plays the next script and ends."""

    def __init__(self) -> None:
        self.current: dict[str, Any] | None = configmap(10, table("sip:10.0.0.1"))
        self.scripts: list[list[dict[str, Any]]] = []
        self.watches: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.query["fieldSelector"] == "metadata.name=sipdispatch-table"
        assert request.headers["Authorization"] == "Bearer secret"
        if "watch" not in request.query:
            if self.current is None:  # no such ConfigMap
                return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
            rv = self.current["metadata"]["resourceVersion"]
            return web.json_response({"metadata": {"resourceVersion": rv}, "items": [self.current]})
        self.watches.append(dict(request.query))
        response = web.StreamResponse()
        await response.prepare(request)
        script = self.scripts.pop(0) if self.scripts else []
        for event in script:
            if event["type"] == "LATER":  # changes the ConfigMap without this watch seeing it
                self.current = event["object"]
                continue
            if event["type"] in ("ADDED", "MODIFIED"):
                self.current = event["object"]
            await response.write(json.dumps(event).encode() + b"\n")
        if not script:  # nothing more: a quiet watch, until the client goes away
            for _ in range(600):
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.05)
        return response


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[ScriptedApi, Kube]]:
    scripted = ScriptedApi()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/voice/configmaps", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = kubeconfig(tmp_path / "config", f"http://127.0.0.1:{port}", {"token": "secret"})
    kube = Kube(locate(config))
    yield scripted, kube
    await kube.close()
    await runner.cleanup()


def uris(loaded: LoadedTable) -> list[str]:
    return [d.uri for s in loaded.table.sets for d in s.destinations]


async def test_first_table_then_changes_through_a_bad_table_and_a_410(
    api: tuple[ScriptedApi, Kube],
) -> None:
    scripted, kube = api
    source = KubeTableSource(kube, "voice", "sipdispatch-table")
    first = await source.first()
    assert uris(first) == ["sip:10.0.0.1"]
    assert (source.version, source.proxy) == ("10", "edge")
    scripted.scripts = [
        [
            {"type": "MODIFIED", "object": configmap(11, "sets: [{id: x}]")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
            {"type": "MODIFIED", "object": configmap(13, table("sip:10.0.0.2"))},
            {"type": "LATER", "object": configmap(20, table("sip:10.0.0.3"))},
            {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
        ],
    ]
    changes = source.changes()
    bad = await asyncio.wait_for(anext(changes), 5)
    assert isinstance(bad, TableError)
    assert "sets[0].id" in str(bad)
    assert source.version == "10"  # still serving the first table
    second = await asyncio.wait_for(anext(changes), 5)
    assert isinstance(second, LoadedTable)
    assert uris(second) == ["sip:10.0.0.2"]
    # What changed while the watch was expired is found by listing again.
    third = await asyncio.wait_for(anext(changes), 5)
    assert isinstance(third, LoadedTable)
    assert uris(third) == ["sip:10.0.0.3"]
    assert source.version == "20"
    quiet = asyncio.ensure_future(anext(changes))  # the next watch, from the re-list
    for _ in range(50):
        if len(scripted.watches) == 2:
            break
        await asyncio.sleep(0.05)
    quiet.cancel()
    await asyncio.gather(quiet, return_exceptions=True)
    first_watch = scripted.watches[0]
    assert first_watch["resourceVersion"] == "10"
    assert first_watch["allowWatchBookmarks"].lower() == "true"
    assert scripted.watches[1]["resourceVersion"] == "20"  # after the re-list


async def test_a_missing_table_is_waited_for_and_reload_says_so(
    api: tuple[ScriptedApi, Kube],
) -> None:
    scripted, kube = api
    source = KubeTableSource(kube, "voice", "sipdispatch-table")
    scripted.current = {"metadata": {"name": "sipdispatch-table", "resourceVersion": "3"}}
    with pytest.raises(TableError, match=r"has no key 'table\.yaml'"):
        await source.reload()
    waiting = asyncio.ensure_future(source.first())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    scripted.current = configmap(4, table("sip:10.0.0.9"))
    assert uris(await asyncio.wait_for(waiting, 5)) == ["sip:10.0.0.9"]


async def test_without_a_table_no_sets_are_served_until_one_appears(
    api: tuple[ScriptedApi, Kube],
) -> None:
    """A fresh install: no DispatcherSet names the proxy yet, so the operator has rendered no
    table. The proxy serves an empty one (it is ready, calls get 503) and takes the table the
    moment it appears."""
    scripted, kube = api
    scripted.current = None
    source = KubeTableSource(kube, "voice", "sipdispatch-table")
    assert uris(await asyncio.wait_for(source.first(), 5)) == []
    assert uris(await source.reload()) == []
    scripted.scripts.append([{"type": "ADDED", "object": configmap(5, table("sip:10.0.0.7"))}])
    changes = source.changes()
    change = await asyncio.wait_for(anext(changes), 5)
    assert isinstance(change, LoadedTable)
    assert uris(change) == ["sip:10.0.0.7"]
    await changes.aclose()
    scripted.current = None  # deleted later: a reload keeps the last table
    with pytest.raises(TableError, match="not found"):
        await source.reload()


def test_a_kubeconfig_without_the_current_context_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\ncontexts: []\n")
    with pytest.raises(KubeConfigError, match="cannot use kubeconfig"):
        locate(path)


def test_without_credentials_the_error_says_where_they_were_looked_for(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="kubeconfig not found"):
        locate(tmp_path / "missing")
