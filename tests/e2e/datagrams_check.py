"""The compiled build's UDP by the batch (``proxy/transport/_datagrams.c``) over loopback.

Run by the compiled build's Python (``hack/build-native``), where the C module exists:

    .venv-native/bin/python tests/e2e/datagrams_check.py

Checks, on real sockets: datagrams of every size (empty to 65,507 bytes) and more of them than
one wake-up reads arrive whole, in order, each with its source, over IPv4 and IPv6; what the
messages of one batch send leaves together after the batch and arrives; a send to a host that
is not a numeric address, or of the other family, is dropped and those after it go out; more
sources than the address memo holds keep their own addresses; and datagrams the kernel will not
take now (a scripted refusal: on loopback the kernel always takes them) wait for the socket to
be writable, in order. Prints what it checked; exits 1 at the first failure.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from sipdispatch.proxy.transport import _datagrams, udp
from sipdispatch.proxy.transport.udp import UdpEndpoint, open_udp

Address = tuple[str, int]


class Sink:
    """Keeps what arrives; answers every datagram whose text starts with "echo" to its source
    (a send made while a batch is handled)."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, Address]] = []
        self.endpoint: UdpEndpoint | None = None

    def message_received(self, data: bytes, source: Address, arrival: object) -> None:
        self.messages.append((data, source))
        if data.startswith(b"echo") and self.endpoint is not None:
            self.endpoint.send(source, b"re:" + data)


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAILED: {what}")
        sys.exit(1)
    print(f"ok: {what}")


async def until(condition: object, seconds: float = 5.0) -> None:
    assert callable(condition)
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


def peer(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[tuple[bytes, Address]]:
    got = []
    while True:
        try:
            data, source = sock.recvfrom(65535)
        except BlockingIOError:
            return got
        got.append((data, (source[0], source[1])))


async def arrival(family: int, host: str) -> None:
    sink = Sink()
    endpoint = await open_udp(host, 0, sink)
    check(endpoint.transport is None, f"{host}: served by the batch, not a loop transport")
    sizes = [0, 1, 1400, 65507 if family == socket.AF_INET else 65487, *range(10, 310)]
    with peer(family, host) as sender:
        expected = []
        for n, size in enumerate(sizes):
            data = (b"%06d" % n + b"x" * size)[:size]
            sender.sendto(data, endpoint.local_address)
            expected.append((data, (sender.getsockname()[0], sender.getsockname()[1])))
        await until(lambda: len(sink.messages) >= len(sizes))
    check(sink.messages == expected, f"{host}: {len(sizes)} datagrams of 0 to 65k bytes, whole")
    endpoint.close()


async def answers(family: int, host: str) -> None:
    sink = Sink()
    endpoint = sink.endpoint = await open_udp(host, 0, sink)
    with peer(family, host) as caller:
        for n in range(200):
            caller.sendto(b"echo %d" % n, endpoint.local_address)
        got: list[tuple[bytes, Address]] = []
        for _ in range(500):
            got += drain(caller)
            if len(got) >= 200:
                break
            await asyncio.sleep(0.01)
    check(
        [data for data, _ in got] == [b"re:echo %d" % n for n in range(200)],
        f"{host}: 200 answers sent while batches are handled arrive, in order",
    )
    check(
        all(source == endpoint.local_address for _, source in got),
        f"{host}: answers leave from the endpoint's address",
    )
    endpoint.close()


async def refusals() -> None:
    sink = Sink()
    endpoint = await open_udp("127.0.0.1", 0, sink)
    with peer(socket.AF_INET, "127.0.0.1") as target:
        to = target.getsockname()
        endpoint.send(("gateway.example.com", 5060), b"to a name")
        endpoint.send(("::1", to[1]), b"to the other family")
        endpoint.send(("127.0.0.1", 70000), b"to no port")
        endpoint.send((to[0], to[1]), b"after them")
        await asyncio.sleep(0.1)
        got = drain(target)
    check(
        [data for data, _ in got] == [b"after them"], "unsendable datagrams dropped, not the next"
    )
    endpoint.close()


async def many_sources() -> None:
    sink = Sink()
    endpoint = await open_udp("127.0.0.1", 0, sink)
    sent: list[Address] = []
    try:
        for n in range(5000):
            with peer(socket.AF_INET, f"127.0.{n // 200}.{n % 200 + 1}") as sock:
                sock.sendto(b"hello", endpoint.local_address)
                sent.append((sock.getsockname()[0], sock.getsockname()[1]))
            if n % 200 == 199:
                await until(lambda: len(sink.messages) >= len(sent))
        await until(lambda: len(sink.messages) >= len(sent))
        check(
            sorted(source for _, source in sink.messages) == sorted(sent),
            "5,000 sources (more than the memo holds) each keep their own address",
        )
    finally:
        endpoint.close()


async def kernel_full() -> None:
    """The kernel takes two datagrams, then none until the socket is writable again."""
    sink = Sink()
    endpoint = await open_udp("127.0.0.1", 0, sink)
    real = udp._BATCHES
    assert real is not None
    calls: list[int] = []
    original = real.send

    def refusing(fd: int, items: list[tuple[bytes, Address]]) -> int:
        calls.append(len(items))
        if len(calls) == 1:
            return original(fd, items[:2])  # the kernel's buffer fills after two
        return original(fd, items)

    real.send = refusing
    try:
        with peer(socket.AF_INET, "127.0.0.1") as target:
            to = target.getsockname()
            udp._DRAIN.running = True  # as while a batch is handled: sends wait for its end
            for n in range(5):
                endpoint.send((to[0], to[1]), b"d%d" % n)
            udp._DRAIN.running = False
            waiting = udp._DRAIN.waiting
            udp._DRAIN.waiting = []
            for pending in waiting:
                pending._flush()
            endpoint.send((to[0], to[1]), b"d5")  # behind the three the kernel refused
            await until(lambda: len(calls) >= 2)
            await asyncio.sleep(0.05)
            got = [data for data, _ in drain(target)]
    finally:
        real.send = original
        endpoint.close()
    check(calls[0] == 5, "the sends of a batch leave in one sendmmsg after it")
    check(got == [b"d%d" % n for n in range(6)], "refused datagrams go out when writable, in order")


async def main() -> None:
    check(_datagrams.BATCH >= 8, f"batches of {_datagrams.BATCH}")
    await arrival(socket.AF_INET, "127.0.0.1")
    await arrival(socket.AF_INET6, "::1")
    await answers(socket.AF_INET, "127.0.0.1")
    await answers(socket.AF_INET6, "::1")
    await refusals()
    await many_sources()
    await kernel_full()
    print("all datagrams agree")


if __name__ == "__main__":
    import uvloop  # the loop the proxy runs on

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
