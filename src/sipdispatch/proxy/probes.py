"""OPTIONS probes (Kamailio's ``ds_ping_interval``), sent through ordinary client transactions.

A probe is a non-INVITE client transaction with a deadline of its own: the probing timeout,
usually far shorter than Timer F. The core owns the transaction; this module builds the
request and reads the answer (status, round trip, a 503's Retry-After).
"""

from __future__ import annotations

import secrets

from sipdispatch.proxy.state import Address, Hop
from sipdispatch.sip.message import Headers, Request, Response
from sipdispatch.sip.transaction import ClientTransaction
from sipdispatch.sip.uri import format_host

__all__ = ["Probe", "build_options", "retry_after"]


class Probe:
    """One OPTIONS in flight to one destination."""

    __slots__ = (
        "client",
        "give_up_at",
        "hop",
        "id",
        "request",
        "scheduled",
        "started",
        "timer_id",
    )

    def __init__(
        self, probe_id: str, hop: Hop, request: bytes, client: ClientTransaction, now: float
    ) -> None:
        self.id = probe_id
        self.hop = hop
        self.request = request
        self.client = client
        self.started = now
        self.give_up_at = now
        self.scheduled: float | None = None
        self.timer_id = 0

    @property
    def deadline(self) -> float | None:
        if self.client.final:
            return None
        if self.client.deadline is None:
            return self.give_up_at
        return min(self.client.deadline, self.give_up_at)


def build_options(hop: Hop, local: Address, branch: str, from_uri: str) -> Request:
    """The OPTIONS request of one probe (Request-URI: the destination itself)."""
    target = format_host(hop.host, hop.port)
    transport = "" if hop.transport == "udp" else f";transport={hop.transport}"
    headers = Headers()
    headers.append(
        "Via", f"SIP/2.0/{hop.transport.upper()} {format_host(*local)};branch={branch};rport"
    )
    headers.append("Max-Forwards", "70")
    headers.append("From", f"<{from_uri}>;tag={secrets.token_hex(4)}")
    headers.append("To", f"<sip:{target}{transport}>")
    headers.append("Call-ID", f"{secrets.token_hex(8)}@sipdispatch")
    headers.append("CSeq", "1 OPTIONS")
    headers.append("User-Agent", "sipdispatch")
    return Request("OPTIONS", f"sip:{target}{transport}", headers)


def retry_after(response: Response) -> float | None:
    """Seconds of a Retry-After header (RFC 3261 20.33), ignoring its comment and params."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    digits = value.strip().split(";", 1)[0].split("(", 1)[0].strip()
    return float(digits) if digits.isdigit() else None
