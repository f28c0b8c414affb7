"""A sink that keeps what a transport hands up, for the transport tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from sipdispatch.proxy.core import Address


@dataclass
class Received:
    """Implements ``DatagramSink``: every message, with its source and transport, in order."""

    messages: list[tuple[bytes, Address, str]] = field(default_factory=list)

    def message_received(self, data: bytes, source: Address, transport: str) -> None:
        self.messages.append((data, source, transport))
