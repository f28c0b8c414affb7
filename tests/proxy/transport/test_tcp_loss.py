"""TCP connections that end, over real loopback sockets: a reset fails what went over the
connection, a clean close does not; sends fall back to another address once a connection is
gone; a connection can stand for an alias (RFC 5923)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from loopback import until
from sinks import Received

from sipdispatch.proxy.core import Address
from sipdispatch.proxy.transport.tcp import TcpTransport

MESSAGE = b"INVITE sip:x SIP/2.0\r\nCall-ID: a\r\nContent-Length: 0\r\n\r\n"
REPLY = b"SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Length: 0\r\n\r\n"

Lab = tuple[TcpTransport, Received, list[Address]]


@pytest.fixture
async def tcp() -> AsyncIterator[Lab]:
    sink = Received()
    failed: list[Address] = []
    transport = TcpTransport(sink, on_error=failed.append)
    yield transport, sink, failed
    await transport.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends a RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _gateway(*, reset: bool) -> tuple[asyncio.Server, Address, asyncio.Event]:
    """A gateway that reads one message and then resets (or cleanly closes) the connection."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if reset:
            _reset(writer)
        else:
            writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    return server, (str(host), int(port)), done


async def test_a_reset_by_the_peer_is_reported_at_the_address_dialled(tcp: Lab) -> None:
    transport, _, failed = tcp
    server, address, _ = await _gateway(reset=True)
    transport.send(address, MESSAGE)
    await until(lambda: bool(failed))
    assert failed == [address]
    assert address not in transport.connections
    server.close()
    await server.wait_closed()


async def test_a_clean_close_by_the_peer_is_not_reported(tcp: Lab) -> None:
    transport, _, failed = tcp
    server, address, done = await _gateway(reset=False)
    transport.send(address, MESSAGE)
    await asyncio.wait_for(done.wait(), 2.0)
    await until(lambda: address not in transport.connections)  # gone from the registry
    await asyncio.sleep(0.05)
    assert failed == []
    server.close()
    await server.wait_closed()


async def test_a_reset_inbound_connection_is_reported_at_its_peer_and_its_alias(
    tcp: Lab,
) -> None:
    transport, sink, failed = tcp
    address = await transport.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(MESSAGE)
    await until(lambda: bool(sink.messages))
    peer = sink.messages[0][1]
    assert transport.alias(peer, ("127.0.0.1", 5099))
    transport.send(("127.0.0.1", 5099), MESSAGE)  # a request to a destination over it
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    _reset(writer)
    await until(lambda: len(failed) == 2)
    assert failed == [peer, ("127.0.0.1", 5099)]
    assert transport.connections == {}


async def test_a_callers_reset_after_only_responses_is_not_reported(tcp: Lab) -> None:
    transport, sink, failed = tcp
    address = await transport.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(MESSAGE)
    await until(lambda: bool(sink.messages))
    peer = sink.messages[0][1]
    transport.send(peer, REPLY, ("127.0.0.1", 9))  # a response: no branch waits on it
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    _reset(writer)
    await until(lambda: not transport.connections)
    await asyncio.sleep(0.05)
    assert failed == []  # nothing for the core to look for: it is not asked to


async def test_a_reply_whose_connection_is_gone_goes_to_the_fallback_not_the_old_port(
    tcp: Lab,
) -> None:
    transport, sink, failed = tcp
    address = await transport.listen("127.0.0.1", 0)
    got: list[bytes] = []

    async def sent_by(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    listening = await asyncio.start_server(sent_by, "127.0.0.1", 0)
    fallback = listening.sockets[0].getsockname()[:2]
    _, writer = await asyncio.open_connection(*address)
    writer.write(MESSAGE)
    await until(lambda: bool(sink.messages))
    peer = sink.messages[0][1]
    writer.close()
    await writer.wait_closed()
    await until(lambda: peer not in transport.connections)
    transport.send(peer, REPLY, fallback)
    await until(lambda: bool(got))
    assert got == [REPLY]
    assert failed == []
    listening.close()
    await listening.wait_closed()


async def test_a_reply_goes_over_the_live_connection_whatever_the_fallback(tcp: Lab) -> None:
    transport, sink, _ = tcp
    address = await transport.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(MESSAGE)
    await until(lambda: bool(sink.messages))
    transport.send(sink.messages[0][1], REPLY, ("127.0.0.1", 9))  # nothing listens on 9
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0) == REPLY
    writer.close()
    await writer.wait_closed()


async def test_an_alias_carries_sends_to_it_over_the_connection_and_never_steals_one(
    tcp: Lab,
) -> None:
    transport, sink, _ = tcp
    address = await transport.listen("127.0.0.1", 0)
    first_reader, first = await asyncio.open_connection(*address)
    second_reader, second = await asyncio.open_connection(*address)
    first.write(MESSAGE)
    await until(lambda: len(sink.messages) == 1)
    second.write(MESSAGE)
    await until(lambda: len(sink.messages) == 2)
    one, two = sink.messages[0][1], sink.messages[1][1]
    alias = ("127.0.0.1", 5098)
    assert transport.alias(one, alias)
    assert not transport.alias(two, alias)  # taken by a live connection
    transport.send(alias, REPLY)
    assert await asyncio.wait_for(first_reader.readuntil(b"\r\n\r\n"), 2.0) == REPLY
    first.close()
    await first.wait_closed()
    await until(lambda: alias not in transport.connections)
    assert transport.alias(two, alias)  # free again once the first has gone
    transport.send(alias, REPLY)
    assert await asyncio.wait_for(second_reader.readuntil(b"\r\n\r\n"), 2.0) == REPLY
    second.close()
    await second.wait_closed()
