"""OPTIONS probes (Kamailio's ``ds_ping_interval``), sent through ordinary client transactions.

A probe is a non-INVITE client transaction with a deadline of its own: the probing timeout,
usually far shorter than Timer F. ``Probing`` owns the probes in flight; its result for each is
one ``ProbeCompleted`` event (status, round trip, a 503's Retry-After).

A forged reply could bring a dead destination back, so a probe cannot be answered blind: its
branch and Call-ID are random (``secrets``: no I/O, and not guessable from earlier probes), and
a reply counts only when it comes from the probed destination's own address over the
transport the probe went by. Any other is dropped and reported (``ProbeReplyRejected``).
"""

from __future__ import annotations

import ipaddress
import secrets

from sipdispatch.proxy.core.deadlines import Deadlines, Timed
from sipdispatch.proxy.core.outbox import BRANCH_PREFIX, Outbox, via_value
from sipdispatch.proxy.core.records import Address, CoreSettings, Hop, Listener
from sipdispatch.proxy.events import ProbeCompleted, ProbeReplyRejected
from sipdispatch.sip import grammar
from sipdispatch.sip.message import Headers, Request, Response
from sipdispatch.sip.transaction import Action, ClientTransaction
from sipdispatch.sip.uri import format_host

__all__ = ["Probe", "Probing", "build_options", "retry_after"]


class Probe(Timed):
    """One OPTIONS in flight to one destination."""

    __slots__ = (
        "client",
        "give_up_at",
        "hop",
        "id",
        "listener",
        "literal",
        "request",
        "started",
    )

    def __init__(  # noqa: PLR0917 - the probe's identity, target, bytes, machine, time, socket
        self,
        probe_id: str,
        hop: Hop,
        request: bytes,
        client: ClientTransaction,
        now: float,
        listener: Listener | None = None,
    ) -> None:
        super().__init__()
        self.id = probe_id
        self.hop = hop
        self.listener = listener
        self.request = request
        self.client = client
        self.started = now
        self.give_up_at = now
        #: the destination is an IP address, not a name the transport resolves when sending
        self.literal = _is_ip(hop.host)

    def from_host(self, host: str) -> bool:
        """Whether a reply from ``host`` comes from the probed destination. A destination named
        by a host name is resolved by the socket layer, out of sight: its port and transport
        are all that can be checked."""
        return host == self.hop.host or not self.literal

    @property
    def deadline(self) -> float | None:
        if self.client.final:
            return None
        if self.client.deadline is None:
            return self.give_up_at
        return min(self.client.deadline, self.give_up_at)


class Probing:
    """The probes in flight, by branch id."""

    def __init__(self, settings: CoreSettings, deadlines: Deadlines) -> None:
        self.settings = settings
        self._deadlines = deadlines
        self._probes: dict[str, Probe] = {}

    def __len__(self) -> int:
        return len(self._probes)

    def start(self, hop: Hop, from_uri: str, timeout: float, now: float, out: Outbox) -> str:
        """Send an OPTIONS to ``hop``; returns the probe id. A hop whose transport has no
        listener completes at once with a 503, so the prober sees it as down."""
        probe_id = f"{BRANCH_PREFIX}P{secrets.token_hex(8)}"
        listener = self.settings.outbound(hop)
        if listener is None:
            out.report(ProbeCompleted(probe_id, hop.key, 503, None))
            return probe_id
        request = build_options(hop, listener.local, probe_id, from_uri).to_bytes()
        client = ClientTransaction(
            invite=False, reliable=hop.transport != "udp", now=now, timers=self.settings.timers
        )
        probe = Probe(probe_id, hop, request, client, now, listener)
        probe.give_up_at = now + timeout
        self._probes[probe_id] = probe
        out.send(hop, request, listener)
        self._deadlines.schedule(probe)
        return probe_id

    def on_response(  # noqa: PLR0917 - the reply, where it came from, the time, the outbox
        self,
        probe_id: str,
        response: Response,
        source: Address,
        transport: str,
        now: float,
        out: Outbox,
    ) -> None:
        probe = self._probes.get(probe_id)
        if probe is None:
            return  # late (the probe timed out) or never ours
        hop = probe.hop
        if source[1] != hop.port or transport != hop.transport or not probe.from_host(source[0]):
            out.report(ProbeReplyRejected(hop.key, source, transport))
            return
        if response.status >= 200:
            rtt = now - probe.started
            self._finish(probe, response.status, rtt, out, retry_after(response))

    def on_timer(self, probe: Probe, now: float, out: Outbox) -> None:
        if now >= probe.give_up_at:
            self._finish(probe, 408, None, out)
            return
        for action in probe.client.on_timer(now):
            if action is Action.RETRANSMIT:
                out.send(probe.hop, probe.request, probe.listener)
            elif action is Action.TIMEOUT:
                self._finish(probe, 408, None, out)
                return
        self._deadlines.schedule(probe)

    def transport_failed(self, address: Address, transport: str, out: Outbox) -> None:
        for probe in list(self._probes.values()):
            if (probe.hop.host, probe.hop.port) == address and probe.hop.transport == transport:
                self._finish(probe, 503, None, out)

    def _finish(
        self, probe: Probe, status: int, rtt: float | None, out: Outbox, retry: float | None = None
    ) -> None:
        probe.client.terminate()
        self._probes.pop(probe.id, None)
        self._deadlines.unschedule(probe)
        hop = probe.hop
        out.report(ProbeCompleted(probe.id, hop.key, status, rtt, retry))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def build_options(hop: Hop, local: Address, branch: str, from_uri: str) -> Request:
    """The OPTIONS request of one probe (Request-URI: the destination itself)."""
    target = format_host(hop.host, hop.port)
    transport = "" if hop.transport == "udp" else f";transport={hop.transport}"
    headers = Headers()
    headers.append("Via", via_value(hop.transport, local, branch))
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
    return float(digits) if grammar.is_digits(digits) else None
