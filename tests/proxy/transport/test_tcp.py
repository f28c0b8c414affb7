"""TCP over real loopback sockets: framing, replies on the same connection, dialling out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from loopback import until
from sinks import Received

from sipdispatch.proxy.core import Address
from sipdispatch.proxy.transport.tcp import TcpTransport


def _message(call_id: str, body: str = "") -> bytes:
    return (
        f"OPTIONS sip:x SIP/2.0\r\nCall-ID: {call_id}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def _connected(
    transport: TcpTransport, sink: Received
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connected to the transport's new listener, its first message delivered."""
    address = await transport.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(_message("a"))
    await until(lambda: bool(sink.messages))
    return reader, writer


@pytest.fixture
async def tcp() -> AsyncIterator[tuple[TcpTransport, Received, list[Address]]]:
    sink = Received()
    failed: list[Address] = []
    transport = TcpTransport(sink, on_error=failed.append)
    yield transport, sink, failed
    await transport.close()


async def test_messages_are_framed_by_content_length_whatever_the_segments(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    transport, sink, _ = tcp
    address = await transport.listen("127.0.0.1", 0)
    _, writer = await asyncio.open_connection(*address)
    first, second, third = _message("a", "hello"), _message("b"), _message("c", "xyz")
    writer.write(first + second[:10])  # one and a half messages
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(second[10:] + third)
    await writer.drain()
    await until(lambda: len(sink.messages) == 3)
    peer = writer.get_extra_info("sockname")[:2]
    assert sink.messages == [(first, peer, "tcp"), (second, peer, "tcp"), (third, peer, "tcp")]
    writer.close()
    await writer.wait_closed()


async def test_a_reply_goes_back_over_the_connection_the_request_came_on(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    transport, sink, _ = tcp
    reader, writer = await _connected(transport, sink)
    transport.send(sink.messages[0][1], b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    assert reply == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    writer.close()
    await writer.wait_closed()
    await until(lambda: not transport.connections)  # the closed connection leaves the registry


async def test_sending_to_a_new_address_dials_it_and_keeps_the_order(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    transport, _, failed = tcp
    received = bytearray()

    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.readexactly(len(_message("1")) * 2))
        writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    transport.send(address, _message("1"))
    transport.send(address, _message("2"))  # queued while the first dial is under way
    await until(lambda: len(received) == len(_message("1")) * 2)
    assert bytes(received) == _message("1") + _message("2")
    assert failed == []
    server.close()
    await server.wait_closed()


async def test_a_send_as_the_dial_completes_comes_after_the_queued_ones(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    # A 180 queued while the dial is under way, then a 200 sent the moment the new connection
    # is registered: the 200 must not overtake the 180 (RFC 3261 18.2.2 responses).
    transport, _, failed = tcp
    received = bytearray()
    ringing, ok = _message("180"), _message("200")

    async def caller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.readexactly(len(ringing) + len(ok)))
        writer.close()

    server = await asyncio.start_server(caller, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    loop = asyncio.get_running_loop()

    def send_once_registered() -> None:  # looks once per turn of the loop
        if address in transport.connections:
            transport.send(address, ok)
        else:
            loop.call_soon(send_once_registered)

    transport.send(address, ringing)
    loop.call_soon(send_once_registered)
    await until(lambda: len(received) == len(ringing) + len(ok))
    assert bytes(received) == ringing + ok
    assert failed == []
    server.close()
    await server.wait_closed()


async def test_an_address_nobody_listens_on_is_reported_as_failed(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    transport, _, failed = tcp
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    server.close()
    await server.wait_closed()  # the port is free again: connecting is refused
    transport.send(address, _message("1"))
    await until(lambda: bool(failed))
    assert failed == [address]
    assert address not in transport.connections


async def test_a_stream_that_cannot_be_framed_is_closed(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    transport, sink, _ = tcp
    transport.max_message_size = 1000
    address = await transport.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"y" * 1200)  # no end of headers in sight
    assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed by the proxy
    assert sink.messages == []
    writer.close()
    await writer.wait_closed()


async def test_a_garbled_content_length_is_handed_on_and_the_stream_goes_on(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    transport, sink, _ = tcp
    address = await transport.listen("127.0.0.1", 0)
    _, writer = await asyncio.open_connection(*address)
    garbled = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: nine\r\n\r\n"
    writer.write(garbled + _message("next"))
    await until(lambda: len(sink.messages) == 2)
    # the first for the core to answer (400), then the next one on the same connection
    assert [data for data, _, _ in sink.messages] == [garbled, _message("next")]
    writer.close()
    await writer.wait_closed()
    writer.close()
    await writer.wait_closed()


async def test_close_ends_listeners_and_connections(
    tcp: tuple[TcpTransport, Received, list[Address]],
) -> None:
    transport, sink, _ = tcp
    reader, writer = await _connected(transport, sink)
    address = writer.get_extra_info("peername")[:2]
    await transport.close()
    assert await asyncio.wait_for(reader.read(), 2.0) == b""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*address)
    writer.close()
