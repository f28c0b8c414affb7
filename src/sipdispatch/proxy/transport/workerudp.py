"""A worker's UDP socket pair (``--workers``): the shared port and a port of its own.

Requests leave from the worker's own port, which its Via names, so that their responses come
back to this worker whichever way the next hop answers (to the Via or, with ``rport``, to the
source). Responses leave from the shared port the request came in on, as RFC 3581 asks (a
caller behind NAT takes them only from the address it sent to).
"""

from __future__ import annotations

from sipdispatch.proxy.core import Address
from sipdispatch.proxy.transport.udp import UdpEndpoint

__all__ = ["WorkerEndpoint"]


class WorkerEndpoint(UdpEndpoint):
    """Sends requests from ``own``, responses from ``shared``; receives on both."""

    def __init__(self, shared: UdpEndpoint, own: UdpEndpoint) -> None:
        super().__init__(own.sink, own.listener)
        self.shared = shared
        self.own = own
        self.transport = own.transport

    def send(self, address: Address, data: bytes) -> None:
        (self.shared if data.startswith(b"SIP/2.0 ") else self.own).send(address, data)

    def close(self) -> None:
        self.own.close()  # the shared one is the server's to close
