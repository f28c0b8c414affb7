"""Fixtures of the proxy's asyncio tests: SIP peers on loopback, closed after each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from loopback import Peer


@pytest.fixture
async def make_peer() -> AsyncIterator[Callable[..., asyncio.Future[Peer]]]:
    made: list[Peer] = []

    async def make(**fields: object) -> Peer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(
            lambda: Peer(**fields),  # type: ignore[arg-type]
            local_addr=("127.0.0.1", 0),
        )
        made.append(peer)
        return peer

    yield make  # type: ignore[misc]
    for peer in made:
        if peer.transport is not None:
            peer.transport.close()
