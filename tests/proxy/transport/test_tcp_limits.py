"""TCP limits over real loopback sockets: connection caps (in all and per source), the idle
timeout, and the timeout of a message begun and never finished."""

from __future__ import annotations

import asyncio
import time

from loopback import until
from sinks import Received

from sipdispatch.proxy.transport.tcp import TcpLimits, TcpTransport


def _message(call_id: str) -> bytes:
    return f"OPTIONS sip:x SIP/2.0\r\nCall-ID: {call_id}\r\nContent-Length: 0\r\n\r\n".encode()


async def _closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the proxy's side closed (EOF or reset) within ``within`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_connections_beyond_the_caps_are_closed_at_once() -> None:
    transport = TcpTransport(Received(), limits=TcpLimits(max_connections=3, max_per_source=2))
    opened: list[asyncio.StreamWriter] = []

    async def connect(source: str) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0))
        opened.append(writer)
        return reader

    try:
        address = await transport.listen("127.0.0.1", 0)
        kept = [await connect("127.0.0.1"), await connect("127.0.0.1")]
        assert await _closed_by_peer(await connect("127.0.0.1"), 2.0)  # over per source
        kept.append(await connect("127.0.0.2"))
        assert await _closed_by_peer(await connect("127.0.0.3"), 2.0)  # over the cap in all
        await until(lambda: transport.open_connections == (3, 0))
        for reader in kept:
            assert not await _closed_by_peer(reader, 0.05)
        assert transport.counts["capacity"] == transport.counts["source-capacity"] == 1
        for writer in opened:  # a place freed is taken again
            writer.close()
        await until(lambda: transport.open_connections == (0, 0))
        assert not await _closed_by_peer(await connect("127.0.0.1"), 0.1)
    finally:
        for writer in opened:
            writer.close()
        await transport.close()


async def test_an_idle_connection_is_closed_after_the_timeout_and_a_busy_one_is_not() -> None:
    sink = Received()
    transport = TcpTransport(sink, limits=TcpLimits(idle_timeout=0.6))
    try:
        address = await transport.listen("127.0.0.1", 0)
        idle_reader, idle = await asyncio.open_connection(*address)
        busy_reader, busy = await asyncio.open_connection(*address)
        for n in range(8):  # a message every 0.15 s for 1.2 s: never quiet for long
            busy.write(_message(f"m{n}"))
            await asyncio.sleep(0.15)
            if n == 2:
                assert not idle_reader.at_eof()  # 0.45 s: not yet
        assert await _closed_by_peer(idle_reader, 1.0)
        assert not await _closed_by_peer(busy_reader, 0.05)
        assert len(sink.messages) == 8
        assert transport.counts["idle"] == 1
        busy.close()
        idle.close()
    finally:
        await transport.close()


async def test_a_message_left_unfinished_closes_its_connection() -> None:
    sink = Received()
    transport = TcpTransport(sink, limits=TcpLimits(message_timeout=0.5))
    try:
        address = await transport.listen("127.0.0.1", 0)
        slow_reader, slow = await asyncio.open_connection(*address)
        steady_reader, steady = await asyncio.open_connection(*address)
        header = _message("slow")
        started = time.monotonic()
        for n in range(12):  # the slow one: a byte of its header every 0.1 s, never done
            slow.write(header[n : n + 1])
            steady.write(_message(f"s{n}")[:-4])  # the steady one: each message finished
            await asyncio.sleep(0.05)
            steady.write(b"\r\n\r\n")
            await asyncio.sleep(0.05)
            if slow_reader.at_eof():
                break
        assert await _closed_by_peer(slow_reader, 1.0)
        assert time.monotonic() - started >= 0.5
        assert not await _closed_by_peer(steady_reader, 0.05)
        assert transport.counts["unfinished-message"] == 1
        steady.close()
        slow.close()
    finally:
        await transport.close()
