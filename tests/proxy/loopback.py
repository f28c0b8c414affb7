"""Real loopback SIP peers for the proxy's asyncio tests, and a wait helper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sipphelpers import free_port


@dataclass
class Peer(asyncio.DatagramProtocol):
    """A SIP peer on loopback answering OPTIONS with ``status`` (None: silence)."""

    status: int | None = 200
    extra: str = ""
    received: list[str] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        text = data.decode()
        self.received.append(text)
        if self.status is None or self.transport is None:
            return
        copied = [
            line
            for line in text.split("\r\n")[1:]
            if line.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")
        ]
        reply = f"SIP/2.0 {self.status} Reply\r\n" + "".join(f"{h}\r\n" for h in copied)
        reply += self.extra + "Content-Length: 0\r\n\r\n"
        self.transport.sendto(reply.encode(), addr)

    @property
    def uri(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"sip:{host}:{port}"

    def options(self) -> list[str]:
        return [m for m in self.received if m.startswith("OPTIONS ")]


def free_udp_port() -> int:
    """A loopback port free for UDP and for TCP too: engines listen on both with one port,
    and a UDP-only check once handed out a port a TCP connection held."""
    return free_port("127.0.0.1")


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``check()`` holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
