"""TCP: a listener, outbound connections on demand, and one registry keyed by peer address.

SIP over a stream is framed by Content-Length (``codec.StreamFramer``). Responses go back over
the connection the request came on (RFC 3261 18.2.2): the core addresses them to the request's
source, which is exactly the registry key. When that connection is gone, a send's ``fallback``
is used instead (a response's Via sent-by, the Request-URI of a request toward a caller whose
flow ended): the transport never dials a peer's ephemeral port for it. A connection is also
found under the addresses it was dialled at and, for a request whose Via asked for it (RFC
5923 ``alias``), under that Via's sent-by. What is sent to an address while a dial there is
under way waits for it, and goes out in order the moment the connection is registered.

A connection that ends with an error (a reset, a failed write) and that a branch may wait
on (one we dialled, or one that carried a request to a destination) is reported through
``on_error`` under every address it was registered at, like a connection that could not be
opened: the branches sent over it fail over at once. A clean close (FIN) is not: the peer may
still answer on a new connection to our Via sent-by (RFC 3261 18.2.2), so its branches wait
for their answer timeout as over UDP.

A malformed message is the core's business (it
answers 400 and the connection goes on, see ``StreamFramer``); only a connection whose header
section outgrows the size limit is closed, since that stream cannot be resynchronised.

``TcpLimits`` bound what peers can hold (each limit 0 is off): inbound connections in all and
per source address (one beyond is closed as soon as it is accepted), and how long a connection
may stay silent (idle) or keep a message begun and unfinished (a slow header section). The
timeouts cost nothing per message beyond setting a flag: a sweep every quarter of the shorter
timeout finds the connections to close, so a connection is closed between one and one and a
quarter timeouts after it went quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sipdispatch.proxy.core import Address, Listener
from sipdispatch.proxy.ratelog import RateLimitedLog
from sipdispatch.proxy.transport.udp import DatagramSink
from sipdispatch.sip.codec import MAX_MESSAGE_SIZE, StreamFramer
from sipdispatch.sip.errors import RemoteProtocolError

__all__ = ["TcpConnection", "TcpLimits", "TcpTransport"]

log = logging.getLogger(__name__)

#: connections the kernel queues before they are accepted: asyncio's 100 makes a burst of
#: callers (after a restart, say) wait seconds for SYN retransmissions
ACCEPT_BACKLOG = 1024

#: why connections were refused or closed, as counted (and labelled in metrics)
CAPACITY = "capacity"
SOURCE_CAPACITY = "source-capacity"
IDLE = "idle"
UNFINISHED = "unfinished-message"


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """Bounds on TCP connections; each 0 turns its bound off."""

    #: inbound connections open at once
    max_connections: int = 0
    #: inbound connections open at once from one source address
    max_per_source: int = 0
    #: seconds a connection may carry nothing either way before it is closed
    idle_timeout: float = 0.0
    #: seconds a message (its header section, then its body) may take to arrive in full
    message_timeout: float = 0.0


class TcpConnection(asyncio.Protocol):
    def __init__(
        self,
        owner: TcpTransport,
        inbound: bool = False,
        listener: Listener | None = None,
        dialled: Address | None = None,
    ) -> None:
        self.owner = owner
        self.inbound = inbound
        #: the listener it was accepted on (None: dialled out; the transport's default)
        self.listener = listener
        self.framer = StreamFramer(owner.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None
        self.dialled = dialled  # the address an outbound connection was opened to
        self.aliases: list[Address] = []  # Via sent-by addresses it stands for (RFC 5923)
        #: whether a branch may wait on it: dialled by us, or it carried a send without a
        #: fallback (a request to a destination). Only then is its loss reported: each report
        #: costs the core a look over its branches, which a caller resetting its own
        #: connections must not be able to ask for at will.
        self.carries_branches = False
        # For the sweep: traffic since it last looked, and a message completed since then.
        self.active = True
        self.completed = False
        self.quiet_since = 0.0
        self.unfinished_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (str(host), int(port))
        if self.inbound and not self.owner.admit(self):
            self.transport.abort()  # at once, and without a FIN wait holding its descriptor
            return
        self.owner.register(self)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.active = True
        try:
            messages = self.framer.feed(data)
        except RemoteProtocolError as exc:
            log.info("closing TCP connection from %s: %s", self.peer, exc)
            if self.transport is not None:
                self.transport.close()
            return
        if messages:
            self.completed = True
        for message in messages:
            arrival = self.listener or self.owner.name
            self.owner.sink.message_received(message, self.peer, arrival)

    def connection_lost(self, exc: Exception | None) -> None:
        addresses = self.owner.unregister(self)
        # A reset or a failed write: nothing more comes over it, so what was sent over it is
        # lost. A clean close (exc None) is not reported: see the module's docstring.
        if exc is not None and addresses and (self.dialled is not None or self.carries_branches):
            log.debug("TCP connection %s lost: %s", self.peer, exc)
            self.owner.lost(addresses)

    @property
    def writable(self) -> bool:
        """Whether a write can still reach the peer (not closed, nor closing)."""
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.active = True
            self.transport.write(data)

    def sweep(self, now: float, limits: TcpLimits) -> str:
        """Whether the connection outlived a timeout at ``now``: "" if not, else which one."""
        idle = limits.idle_timeout
        if idle:
            if self.active:
                self.active = False
                self.quiet_since = now
            elif now - self.quiet_since >= idle:
                return IDLE
        timeout = limits.message_timeout
        if timeout:
            if not self.framer.pending:
                self.unfinished_since = None
            elif self.completed or self.unfinished_since is None:
                self.unfinished_since = now  # a new message began since the last look
            elif now - self.unfinished_since >= timeout:
                return UNFINISHED
            self.completed = False
        return ""


class TcpTransport:
    """All TCP connections of the proxy, inbound and outbound."""

    #: the transport the core is told messages came over (``tls.TlsTransport``: "tls")
    name = "tcp"

    def __init__(
        self,
        sink: DatagramSink,
        on_error: Callable[[Address], None] | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        limits: TcpLimits | None = None,
    ) -> None:
        self.sink = sink
        self.on_error = on_error
        self.max_message_size = max_message_size
        self.limits = limits or TcpLimits()
        self.connections: dict[Address, TcpConnection] = {}
        #: listen with SO_REUSEPORT: other worker processes share the port
        self.reuse_port = False
        self._open: set[TcpConnection] = set()  # every connection registered, once
        self._inbound = 0
        self._per_source: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._limited = RateLimitedLog(log)
        #: connections refused or closed by a limit so far, by reason
        self.counts: dict[str, int] = {CAPACITY: 0, SOURCE_CAPACITY: 0, IDLE: 0, UNFINISHED: 0}
        self._connecting: dict[Address, list[bytes]] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int, listener: Listener | None = None) -> Address:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: TcpConnection(self, True, listener),
            host,
            port,
            backlog=ACCEPT_BACKLOG,
            reuse_port=self.reuse_port or None,
            **self._listen_options(),
        )
        self._servers.append(server)
        interval = self._sweep_interval()
        if interval and self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep_forever(interval))
        sockname = server.sockets[0].getsockname()
        return (str(sockname[0]), int(sockname[1]))

    def _listen_options(self) -> dict[str, Any]:
        """Extra keywords of ``create_server`` (TLS adds its context)."""
        return {}

    def _connect_options(self, address: Address) -> dict[str, Any]:
        """Extra keywords of ``create_connection`` toward ``address`` (TLS: context, SNI)."""
        return {}

    @property
    def open_connections(self) -> tuple[int, int]:
        """Connections open now: (inbound, outbound)."""
        return self._inbound, len(self._open) - self._inbound

    def admit(self, connection: TcpConnection) -> bool:
        """Whether an inbound connection fits the caps (it is counted in if so)."""
        assert connection.peer is not None
        limits = self.limits
        host = connection.peer[0]
        from_host = self._per_source.get(host, 0)
        if limits.max_connections and self._inbound >= limits.max_connections:
            reason = CAPACITY
        elif limits.max_per_source and from_host >= limits.max_per_source:
            reason = SOURCE_CAPACITY
        else:
            self._inbound += 1
            self._per_source[host] = from_host + 1
            return True
        self.counts[reason] += 1
        if self._limited.allow():
            log.warning("refused a TCP connection from %s: %s limit reached", host, reason)
        return False

    def register(self, connection: TcpConnection) -> None:
        if connection.peer is not None:
            self.connections[connection.peer] = connection
            self._open.add(connection)
        dialled = connection.dialled
        if dialled is not None:
            # Under the address we dialled too (the peer may report it differently), and what
            # waited for the dial goes first, now: a send made the moment the connection is
            # registered (a 200 right behind its 180) must not overtake it.
            self.connections[dialled] = connection
            for data in self._connecting.pop(dialled, []):
                connection.write(data)

    def alias(self, source: Address, alias: Address) -> bool:
        """Let the connection from ``source`` carry what is sent to ``alias`` too (RFC 5923);
        whether it now does. The core checks the alias names the source's own host; a live
        connection already registered there keeps it (first come, first served)."""
        connection = self.connections.get(source)
        if connection is None or not connection.writable:
            return False
        existing = self.connections.get(alias)
        if existing is connection:
            return True
        if existing is not None and existing.writable:
            return False
        self.connections[alias] = connection
        connection.aliases.append(alias)
        return True

    def unregister(self, connection: TcpConnection) -> list[Address]:
        """Forget ``connection``; the addresses that led to it until now."""
        addresses = []
        for address in (connection.peer, connection.dialled, *connection.aliases):
            if address is not None and self.connections.get(address) is connection:
                del self.connections[address]  # else a send there would go nowhere
                addresses.append(address)
        if connection in self._open:
            self._open.discard(connection)
            if connection.inbound and connection.peer is not None:
                self._inbound -= 1
                host = connection.peer[0]
                left = self._per_source.get(host, 1) - 1
                if left > 0:
                    self._per_source[host] = left
                else:
                    self._per_source.pop(host, None)
        return addresses

    def lost(self, addresses: list[Address]) -> None:
        """A connection registered at ``addresses`` broke: fail what was sent over it."""
        if self.on_error is not None:
            for address in addresses:
                self.on_error(address)

    def _sweep_interval(self) -> float:
        timeouts = [t for t in (self.limits.idle_timeout, self.limits.message_timeout) if t > 0]
        return min(5.0, max(0.05, min(timeouts) / 4)) if timeouts else 0.0

    async def _sweep_forever(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            self.sweep(loop.time())

    def sweep(self, now: float) -> None:
        """Close the connections that outlived a timeout."""
        limits = self.limits
        for connection in list(self._open):
            reason = connection.sweep(now, limits)
            if reason and connection.transport is not None:
                self.counts[reason] += 1
                log.debug("closing TCP connection %s: %s", connection.peer, reason)
                connection.transport.close()

    def send(
        self,
        address: Address,
        data: bytes,
        fallback: Address | None = None,
        bind: str | None = None,
    ) -> None:
        """Write ``data`` to the connection registered at ``address``; if there is none (or
        it is closing), to ``fallback``'s when given, else to a new one dialled there (from
        ``bind``, the host of the listener the message leaves from, if given)."""
        connection = self.connections.get(address)
        if fallback is not None and (connection is None or not connection.writable):
            address = fallback
            connection = self.connections.get(address)
        if connection is not None and connection.writable:
            if fallback is None:
                connection.carries_branches = True
            connection.write(data)
            return
        pending = self._connecting.get(address)
        if pending is not None:
            pending.append(data)
            return
        self._connecting[address] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(address, bind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, address: Address, bind: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        try:
            options = self._connect_options(address)
            if bind is not None:
                options = {**options, "local_addr": (bind, 0)}
            # Once made, the connection registers itself and sends what waited (`register`).
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: TcpConnection(self, dialled=address), address[0], address[1], **options
                ),
                timeout=5.0,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot connect to %s:%d: %s", address[0], address[1], exc)
            self._connecting.pop(address, None)
            if self.on_error is not None:
                self.on_error(address)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for server in self._servers:
            server.close()
        for connection in list(self.connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for server in self._servers:
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
