"""UDP over real loopback sockets: datagrams up to the sink, sends out by ``sendto``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from loopback import until
from sinks import Received

from sipdispatch.proxy.transport.udp import RECEIVE_BUFFER, UdpEndpoint, open_udp


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[UdpEndpoint, Received]]:
    sink = Received()
    udp = await open_udp("127.0.0.1", 0, sink)
    yield udp, sink
    udp.close()


def _peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def test_a_datagram_reaches_the_sink_with_its_source(
    endpoint: tuple[UdpEndpoint, Received],
) -> None:
    udp, sink = endpoint
    with _peer() as peer:
        peer.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", udp.local_address)
        await until(lambda: bool(sink.messages))
        assert sink.messages == [
            (b"OPTIONS sip:x SIP/2.0\r\n\r\n", peer.getsockname(), "udp"),
        ]


async def test_send_puts_one_datagram_on_the_wire_to_the_address(
    endpoint: tuple[UdpEndpoint, Received],
) -> None:
    udp, _ = endpoint
    loop = asyncio.get_running_loop()
    with _peer() as peer:
        udp.send(peer.getsockname(), b"SIP/2.0 200 OK\r\n\r\n")
        data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 65535), 2.0)
    assert (data, source) == (b"SIP/2.0 200 OK\r\n\r\n", udp.local_address)


async def test_the_socket_is_bound_where_asked_with_a_grown_receive_buffer(
    endpoint: tuple[UdpEndpoint, Received],
) -> None:
    udp, _ = endpoint
    host, port = udp.local_address
    assert host == "127.0.0.1"
    assert port > 0
    sock = udp.sock
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # The kernel caps the request at rmem_max unless the process may pass it.
    assert granted >= min(default, RECEIVE_BUFFER)
    assert granted > 0


async def test_an_icmp_error_does_not_close_the_endpoint(
    endpoint: tuple[UdpEndpoint, Received],
) -> None:
    udp, sink = endpoint
    with _peer() as closed:
        gone = closed.getsockname()
    udp.send(gone, b"to nobody")  # the port unreachable comes back as error_received
    await asyncio.sleep(0.05)
    with _peer() as peer:
        peer.sendto(b"still here", udp.local_address)
        await until(lambda: bool(sink.messages))
    assert sink.messages[0][0] == b"still here"
