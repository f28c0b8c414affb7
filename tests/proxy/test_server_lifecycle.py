"""The proxy process's life: alive before its first table, draining when told to stop."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from loopback import Peer, free_udp_port, until

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.proxy.server import ProxyServer
from sipdispatch.proxy.settings import ProxySettings
from sipdispatch.proxy.tables import FileTableSource, LoadedTable, TableError
from sipphelpers import free_port

OFF = ProbingSpec.model_validate({"mode": "off"})


class LateSource:
    """A table source whose first table arrives only when the test says so."""

    def __init__(self, real: FileTableSource) -> None:
        self.real = real
        self.release = asyncio.Event()

    @property
    def description(self) -> str:
        return "late"

    async def first(self) -> LoadedTable:
        await self.release.wait()
        return await self.real.first()

    async def reload(self) -> LoadedTable:
        return await self.real.reload()

    async def changes(self) -> AsyncIterator[LoadedTable | TableError]:
        await asyncio.Event().wait()
        yield await self.real.first()


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def _invite(port: int, call_id: str) -> bytes:
    return (
        f"INVITE sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-drain\r\n"
        "From: <sip:a@x>;tag=1\r\nTo: <sip:svc@x>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_health_answers_before_the_first_table_and_readiness_says_why(
    tmp_path: Path,
) -> None:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.2:5060\n")
    source = LateSource(FileTableSource(table, kamailio_format=True, algorithm=4, default_set=None))
    control = free_port()
    server = ProxyServer(
        source,
        ProxySettings(
            listen=(f"udp:127.0.0.1:{free_udp_port()}",),
            control=f"127.0.0.1:{control}",
            probing=OFF,
        ),
    )
    starting = asyncio.create_task(server.start())
    try:
        base = f"http://127.0.0.1:{control}"
        await until(lambda: server._control is not None)
        assert (await _get(f"{base}/healthz"))[0] == 200
        status, body = await _get(f"{base}/readyz")
        assert status == 503
        assert "no destination table" in body
        source.release.set()
        await starting
        assert (await _get(f"{base}/readyz"))[0] == 200
    finally:
        await server.close()


@pytest.mark.slow
async def test_drain_stops_readiness_and_waits_for_calls_being_set_up(
    tmp_path: Path, make_peer: object
) -> None:
    silent: Peer = await make_peer(status=None)  # type: ignore[operator]
    table = tmp_path / "dispatcher.list"
    table.write_text(f"1 {silent.uri}\n")
    port, control = free_port(), free_port()
    server = ProxyServer(
        FileTableSource(table, kamailio_format=True, algorithm=4, default_set=None),
        ProxySettings(
            listen=(f"udp:127.0.0.1:{port}",),
            control=f"127.0.0.1:{control}",
            probing=OFF,
            answer_timeout=0.6,
            timer_t1=0.05,
        ),
    )
    await server.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.sendto(_invite(port, "drain-1"), ("127.0.0.1", port))
            await until(lambda: len(silent.received) > 0)
        assert server.engine is not None
        assert server.engine.core.transaction_count == 1
        started = time.monotonic()
        drained = asyncio.create_task(server.drain(5.0))
        await until(lambda: server.draining)
        status, body = await _get(f"http://127.0.0.1:{control}/readyz")
        assert (status, "draining" in body) == (503, True)
        await drained
        # It waited for the INVITE to end (answer timeout, then 503 upstream), not 5 s.
        assert server.engine.core.transaction_count == 0
        assert 0.3 < time.monotonic() - started < 4.0
    finally:
        await server.close()
