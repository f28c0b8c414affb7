"""A 401 makes ``Kube`` load its credentials again and retry once, as client-go does.

The API server here is a small scripted one on loopback that stops accepting a token on
demand (a real one keeps accepting a revoked token for a while: its authentication cache).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from kubeconfigs import kubeconfig
from sipdispatch.kube import CONFIG_MAP, Kube, KubeError, locate, objects


class Gatekeeper:
    """Answers a ConfigMap to the tokens it accepts, 401 to others; records what it saw."""

    def __init__(self) -> None:
        self.accepted = {"first", "second"}
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token not in self.accepted:
            return web.json_response(
                {"kind": "Status", "code": 401, "message": "Unauthorized"}, status=401
            )
        name = request.match_info["name"]
        return web.json_response({"metadata": {"name": name}, "data": {"token": token}})


@pytest.fixture
async def gatekeeper(tmp_path: Path) -> AsyncIterator[tuple[Gatekeeper, str]]:
    gate = Gatekeeper()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/voice/configmaps/{name}", gate.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield gate, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_refused_token_is_read_again_from_its_file(
    gatekeeper: tuple[Gatekeeper, str], tmp_path: Path
) -> None:
    gate, server = gatekeeper
    token_file = tmp_path / "token"
    token_file.write_text("first")
    config = kubeconfig(tmp_path / "config", server, {"tokenFile": str(token_file)})
    kube = Kube(locate(config))
    try:
        found = await objects.get(kube, CONFIG_MAP, "voice", "table")
        assert found["data"] == {"token": "first"}
        token_file.write_text("second")  # rotated; the old one is revoked
        gate.accepted = {"second"}
        found = await objects.get(kube, CONFIG_MAP, "voice", "table")
        assert found["data"] == {"token": "second"}
        assert gate.seen == ["first", "first", "second"]
        # A token refused again after the reload is an error, not a loop.
        gate.accepted = set()
        with pytest.raises(KubeError) as refused:
            await objects.get(kube, CONFIG_MAP, "voice", "table")
        assert refused.value.status == 401
        assert gate.seen[3:] == ["second", "second"]
    finally:
        await kube.close()
