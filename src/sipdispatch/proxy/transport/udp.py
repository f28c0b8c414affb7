"""UDP: each datagram one call into the engine.

The compiled build reads and writes datagrams by the batch (``_datagrams.c``: recvmmsg and
sendmmsg, with the peers' addresses remembered): at each wake-up the socket is drained, up to
``ROUNDS`` batches, and what the messages of a batch send leaves in one sendmmsg per socket
once the batch is handled. Datagrams the kernel will not take now (its send buffer full) wait
for the socket to become writable. The pure Python build serves the socket with the event
loop's datagram transport, one datagram per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from sipdispatch.proxy.core import Address, Listener

__all__ = ["BATCHED", "DatagramSink", "UdpEndpoint", "open_udp"]

log: Final = logging.getLogger(__name__)

Datagrams = list[tuple[bytes, tuple[str, int]]]


class _Batches:
    """``_datagrams.c``'s receive and send, and its batch size."""

    def __init__(
        self, receive: Callable[[int], Datagrams], send: Callable[[int, Datagrams], int], size: int
    ) -> None:
        self.receive = receive
        self.send = send
        self.size = size


def _load_batches() -> _Batches | None:
    """``_datagrams.c``, built with the compiled hot path; else None."""
    try:
        from sipdispatch.proxy.transport import _datagrams  # noqa: PLC0415 - native only
    except ImportError:
        return None
    return _Batches(_datagrams.receive, _datagrams.send, _datagrams.BATCH)


_BATCHES: Final = _load_batches()
#: whether this build serves UDP by the batch
BATCHED: Final = _BATCHES is not None
#: batches read per wake-up at most, so that a flood on one socket lets the loop turn
ROUNDS: Final = 8
#: datagrams waiting for the kernel to take them, at most; more are dropped (UDP may lose
#: them anyway, and SIP retransmits)
MAX_WAITING: Final = 8192


class _Drain:
    """Whether a drain is running, and the endpoints whose sends wait for its end."""

    def __init__(self) -> None:
        self.running = False
        self.waiting: list[UdpEndpoint] = []


_DRAIN: Final = _Drain()


class DatagramSink(Protocol):
    def message_received(self, data: bytes, source: Address, arrival: Listener | str) -> None:
        """``arrival``: the listener the message came in on (or just its transport)."""


class UdpEndpoint(asyncio.DatagramProtocol):
    """A bound UDP socket feeding the engine, as the listener it is (or plain "udp")."""

    def __init__(self, sink: DatagramSink, listener: Listener | str = "udp") -> None:
        self.sink = sink
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None
        # served by the batch: the socket, its descriptor (-1: not), what waits to be sent
        self._sock: socket.socket | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outgoing: Datagrams = []
        self._writable = False  # waiting for the kernel to take more

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check here.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.sink.message_received(data, (str(addr[0]), int(addr[1])), self.listener)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction timers handle the consequence.
        log.debug("udp error: %s", exc)

    def serve(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """Read ``sock`` (bound) by the batch whenever it is readable."""
        sock.setblocking(False)
        self._sock, self._fd, self._loop = sock, sock.fileno(), loop
        loop.add_reader(self._fd, self._drain)

    def _drain(self) -> None:
        """Read what waits, a batch at a time, up to ``ROUNDS`` batches. What a batch's
        messages send leaves once the batch is handled (one sendmmsg per socket), so that no
        answer waits behind more than a batch."""
        batches = _BATCHES
        assert batches is not None
        drain = _DRAIN
        for _ in range(ROUNDS):
            drain.running = True
            try:
                datagrams = batches.receive(self._fd)
                for data, source in datagrams:
                    self.sink.message_received(data, source, self.listener)
            except OSError as exc:
                log.debug("udp error: %s", exc)
                return
            finally:
                drain.running = False
                waiting = drain.waiting
                drain.waiting = []
                for endpoint in waiting:
                    endpoint._flush()
            if len(datagrams) < batches.size:
                return  # drained

    def send(self, address: Address, data: bytes) -> None:
        if self._fd >= 0:
            outgoing = self._outgoing
            if len(outgoing) >= MAX_WAITING:
                log.debug("udp send buffer full: a datagram to %s dropped", address)
                return
            outgoing.append((data, address))
            if self._writable:
                return  # behind datagrams the kernel has not taken yet
            if _DRAIN.running:
                if len(outgoing) == 1:
                    _DRAIN.waiting.append(self)
                return
            self._flush()
        elif self.transport is not None:
            self.transport.sendto(data, address)

    def _flush(self) -> None:
        batches = _BATCHES
        outgoing = self._outgoing
        if batches is None or not outgoing or self._fd < 0:
            return
        done = batches.send(self._fd, outgoing)
        if done == len(outgoing):
            self._outgoing = []
            if self._writable:
                self._writable = False
                _unwatch(self._loop, self._fd, writer=True)
            return
        del outgoing[:done]
        if not self._writable:
            self._writable = True
            assert self._loop is not None
            self._loop.add_writer(self._fd, self._flush)

    def close(self) -> None:
        if self._sock is not None:
            _unwatch(self._loop, self._fd, writer=False)
            if self._writable:
                _unwatch(self._loop, self._fd, writer=True)
            self._sock.close()
            self._sock, self._fd, self._outgoing = None, -1, []
        if self.transport is not None:
            self.transport.close()

    @property
    def sock(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        assert self.transport is not None
        return cast(socket.socket, self.transport.get_extra_info("socket"))

    @property
    def local_address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return (str(host), int(port))


def _unwatch(loop: asyncio.AbstractEventLoop | None, fd: int, *, writer: bool) -> None:
    """Stop watching ``fd``. (Through Any: asyncio says these return a bool, uvloop returns
    None, and compiled code would check.)"""
    watched: Any = loop
    if watched is not None:
        (watched.remove_writer if writer else watched.remove_reader)(fd)


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
    if BATCHED:
        if sock is None:
            sock = await _bound(loop, host, port, reuse_port)
        endpoint = UdpEndpoint(sink, listener)
        endpoint.serve(sock, loop)
    else:
        make = lambda: UdpEndpoint(sink, listener)  # noqa: E731 - one factory, two calls
        if sock is not None:
            transport, endpoint = await loop.create_datagram_endpoint(make, sock=sock)
        else:
            transport, endpoint = await loop.create_datagram_endpoint(
                make, local_addr=(host, port), reuse_port=reuse_port or None
            )
        endpoint.transport = transport  # uvloop calls connection_made on the next loop turn
        sock = transport.get_extra_info("socket")
    if sock is not None:
        granted = _grow_receive_buffer(sock, RECEIVE_BUFFER)
        log.debug("udp %s:%d receive buffer %d bytes", host, port, granted)
    return endpoint


async def _bound(
    loop: asyncio.AbstractEventLoop, host: str, port: int, reuse_port: bool
) -> socket.socket:
    """A UDP socket bound to ``host:port``, as the event loop's datagram endpoint binds it."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
