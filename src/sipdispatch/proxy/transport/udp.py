"""UDP: one datagram in, one call into the engine; sends go straight to ``sendto``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Final, Protocol, cast

from sipdispatch.proxy.core import Address, Listener

__all__ = ["DatagramSink", "UdpEndpoint", "open_udp"]

log: Final = logging.getLogger(__name__)


class DatagramSink(Protocol):
    def message_received(self, data: bytes, source: Address, arrival: Listener | str) -> None:
        """``arrival``: the listener the message came in on (or just its transport)."""


class UdpEndpoint(asyncio.DatagramProtocol):
    """A bound UDP socket feeding the engine, as the listener it is (or plain "udp")."""

    def __init__(self, sink: DatagramSink, listener: Listener | str = "udp") -> None:
        self.sink = sink
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check here.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.sink.message_received(data, (str(addr[0]), int(addr[1])), self.listener)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction timers handle the consequence.
        log.debug("udp error: %s", exc)

    def send(self, address: Address, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data, address)

    @property
    def local_address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))


#: receive buffer asked for: absorbs bursts (and collector pauses) of several thousand messages
RECEIVE_BUFFER: Final = 8 * 1024 * 1024


def _grow_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; returns what the kernel granted.

    SO_RCVBUFFORCE passes the net.core.rmem_max cap when the process may (CAP_NET_ADMIN, as
    in many SIP pods); otherwise SO_RCVBUF gets what the cap allows.
    """
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


async def open_udp(
    host: str,
    port: int,
    sink: DatagramSink,
    listener: Listener | str = "udp",
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
) -> UdpEndpoint:
    """Bind ``host:port`` (``reuse_port``: shared with other workers), or serve ``sock``,
    bound already."""
    loop = asyncio.get_running_loop()
    make = lambda: UdpEndpoint(sink, listener)  # noqa: E731 - one factory, two calls
    if sock is not None:
        transport, protocol = await loop.create_datagram_endpoint(make, sock=sock)
    else:
        transport, protocol = await loop.create_datagram_endpoint(
            make, local_addr=(host, port), reuse_port=reuse_port or None
        )
    protocol.transport = transport  # uvloop calls connection_made only on the next loop turn
    sock = transport.get_extra_info("socket")
    if sock is not None:
        granted = _grow_receive_buffer(sock, RECEIVE_BUFFER)
        log.debug("udp %s:%d receive buffer %d bytes", host, port, granted)
    return protocol
