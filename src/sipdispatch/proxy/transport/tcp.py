"""TCP: a listener, outbound connections on demand, and one registry keyed by peer address.

SIP over a stream is framed by Content-Length (``codec.StreamFramer``). Responses go back over
the connection the request came on (RFC 3261 18.2.2): the core addresses them to the request's
source, which is exactly the registry key. A malformed message is the core's business (it
answers 400 and the connection goes on, see ``StreamFramer``); only a connection whose header
section outgrows the size limit is closed, since that stream cannot be resynchronised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from sipdispatch.proxy.core import Address
from sipdispatch.proxy.transport.udp import DatagramSink
from sipdispatch.sip.codec import MAX_MESSAGE_SIZE, StreamFramer
from sipdispatch.sip.errors import RemoteProtocolError

__all__ = ["TcpConnection", "TcpTransport"]

log = logging.getLogger(__name__)


class TcpConnection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer(owner.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (str(host), int(port))
        self.owner.register(self)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        try:
            messages = self.framer.feed(data)
        except RemoteProtocolError as exc:
            log.info("closing TCP connection from %s: %s", self.peer, exc)
            if self.transport is not None:
                self.transport.close()
            return
        for message in messages:
            self.owner.sink.message_received(message, self.peer, "tcp")

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.unregister(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class TcpTransport:
    """All TCP connections of the proxy, inbound and outbound."""

    def __init__(
        self,
        sink: DatagramSink,
        on_error: Callable[[Address], None] | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.sink = sink
        self.on_error = on_error
        self.max_message_size = max_message_size
        self.connections: dict[Address, TcpConnection] = {}
        self._connecting: dict[Address, list[bytes]] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> Address:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: TcpConnection(self), host, port)
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        return (str(sockname[0]), int(sockname[1]))

    def register(self, connection: TcpConnection) -> None:
        if connection.peer is not None:
            self.connections[connection.peer] = connection

    def unregister(self, connection: TcpConnection) -> None:
        if connection.peer is not None and self.connections.get(connection.peer) is connection:
            del self.connections[connection.peer]

    def send(self, address: Address, data: bytes) -> None:
        connection = self.connections.get(address)
        if connection is not None:
            connection.write(data)
            return
        pending = self._connecting.get(address)
        if pending is not None:
            pending.append(data)
            return
        self._connecting[address] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: TcpConnection(self), address[0], address[1]),
                timeout=5.0,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot connect to %s:%d: %s", address[0], address[1], exc)
            self._connecting.pop(address, None)
            if self.on_error is not None:
                self.on_error(address)
            return
        # Register under the address we dialled too: the peer may report it differently.
        self.connections[address] = connection
        for data in self._connecting.pop(address, []):
            connection.write(data)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self.connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for server in self._servers:
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
