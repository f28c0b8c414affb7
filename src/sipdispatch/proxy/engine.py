"""Glue between the sans-I/O core, the sockets, the clock and the destination table.

The only place (with the transports) that reads ``loop.time()``: every message and every timer
goes through ``message_received`` / ``_fire``, which call the core with ``now`` and hand what it
returns to the transports, and the events it returns to ``on_events``. One ``loop.call_at``
handle is re-armed from ``next_deadline()``, on a grid of ``TIMER_TICK``. Rejected messages
are logged here: the core, being sans-I/O, only reports them.

This is also the transport boundary's catch-all: should the core raise on a message or a
timer (a bug; the fuzz tests look for them), the engine drops what it was handling, reports a
``HandlingFailed`` event (counted in metrics) and logs one sanitised line, rate-limited, so
that a packet that finds a bug can neither stop the proxy, close a TCP connection, nor flood
the log.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from sipdispatch.dispatch.destinations import (
    DestinationKey,
    DestinationTable,
    Target,
    UnknownSetError,
)
from sipdispatch.dispatch.routes import MISSING_HASH_KEY, Refusal
from sipdispatch.dispatch.tableconfig import TableConfig
from sipdispatch.proxy.core import (
    Address,
    CoreSettings,
    Hop,
    Listener,
    Outbox,
    Proxy,
    RequestSelection,
    Selection,
    Signer,
    destination_id,
)
from sipdispatch.proxy.events import (
    AliasOffered,
    CoreEvent,
    HandlingFailed,
    HashKeyMissing,
    MessageRejected,
    RequestRefused,
)
from sipdispatch.proxy.ratelog import LogThrottle, RateLimitedLog, sanitise
from sipdispatch.proxy.tables import TableError
from sipdispatch.proxy.transport.tcp import TcpTransport
from sipdispatch.proxy.transport.udp import UdpEndpoint

__all__ = ["Engine", "unknown_sockets"]

log: Final = logging.getLogger(__name__)

#: lines about rejected messages and failures of the core logged per 10 s at most
LOG_BURST: Final = 100

#: The core's timers run on a grid of this many seconds: those due within one tick share one
#: wake-up of the loop (at thousands of calls/s, tens of them: a wake-up costs more than the
#: timers it runs), and a message that finds a wake-up armed within a tick leaves it be. A
#: timer runs at most one tick late; SIP's shortest, T1, is 500 ms.
TIMER_TICK: Final = 0.005


class Engine:
    """Runs one proxy core inside an asyncio loop."""

    def __init__(
        self,
        settings: CoreSettings,
        table: DestinationTable,
        signer: Signer,
        on_events: Callable[[Sequence[CoreEvent]], None] | None = None,
    ) -> None:
        self.core = Proxy(settings, self._select, signer)
        self.table = table
        self.core.destinations = _destination_ids(table)
        self.core.sockets = _pinned(table)
        self.on_events = on_events
        #: the first UDP socket (the one a send that names no listener leaves from)
        self.udp: UdpEndpoint | None = None
        #: every UDP socket, by its listener's id, and the first of each address family
        self.udp_by_id: dict[str, UdpEndpoint] = {}
        self._udp_by_family: dict[int, UdpEndpoint] = {}
        self.tcp: TcpTransport | None = None
        self.tls: TcpTransport | None = None  # a ``tls.TlsTransport``
        #: the address an outbound stream connection from each listener is bound to
        self._stream_bind: dict[str, str] = {}
        self._hops: dict[DestinationKey, Hop] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Malformed messages and failures come at the network's rate: the log gets a scan's
        # worth of distinct lines, not one per packet of a flood.
        self._limited = RateLimitedLog(log, burst=LOG_BURST, interval=10.0)
        self._quiet = LogThrottle()

    # ------------------------------------------------------------------ table

    def add_udp(self, listener: Listener, endpoint: UdpEndpoint) -> None:
        """Send from ``endpoint`` what leaves from ``listener``."""
        self.udp_by_id[listener.id] = endpoint
        self._udp_by_family.setdefault(listener.family, endpoint)
        if self.udp is None:
            self.udp = endpoint

    def bind_stream(self, listener: Listener, host: str) -> None:
        """Open the outbound TCP (or TLS) connections of ``listener`` from ``host``."""
        self._stream_bind[listener.id] = host

    def check(self, table: TableConfig) -> None:
        """Refuse a table that pins a destination to a listener this proxy does not have."""
        error = unknown_sockets(table, self.core.settings.sockets.by_id)
        if error is not None:
            raise TableError(error)

    def swap_table(self, table: DestinationTable) -> None:
        """Serve a new table from the next request on (in-flight calls keep their hops)."""
        self.table = table
        self._hops = {}
        self.core.destinations = _destination_ids(table)
        self.core.sockets = _pinned(table)

    def _select(self, ctx: RequestSelection) -> Selection:
        table = self.table
        routes = table.routes
        if routes is None:
            set_id = table.fallback_set
        else:
            decision = routes.decide(ctx)
            if isinstance(decision, Refusal):
                return Selection((), refusal=decision)
            set_id = decision
        try:
            dest_set = table.get_set(set_id)
        except UnknownSetError:
            return Selection(())
        key_missing = None
        if dest_set.required_key is not None and dest_set.key_missing(ctx):
            if dest_set.refuse_missing_key:
                return Selection((), refusal=MISSING_HASH_KEY)
            key_missing = set_id
        targets = None
        if ctx.affinity is not None:  # a retry after a challenge: not a new call
            targets = dest_set.select_first(ctx.affinity)
        if targets is None:
            targets = dest_set.select(ctx)
        hops = [self.hop_for(target) for target in targets]
        return Selection(hops, dest_set.algorithm == "parallel", key_missing=key_missing)

    def hop_for(self, target: Target) -> Hop:
        """The hop the core sends to for a table target (probes use it too): made once per
        table, carrying the target's own `DestinationKey`, which the core's events name."""
        key = target.identity
        hop = self._hops.get(key)
        if hop is None:
            dest = target.destination
            hop = Hop(dest.host, dest.port, dest.transport, key, dest.socket)
            self._hops[key] = hop
        return hop

    # ------------------------------------------------------------------ traffic

    def message_received(self, data: bytes, source: Address, arrival: Listener | str) -> None:
        now = self._now()
        try:
            self._emit(self.core.receive(data, source, arrival, now), now)
        except Exception as exc:  # the catch-all the module docstring describes
            self._failed("message", exc, source)
            self._rearm(now)  # the core may have scheduled something before it raised

    def probe(self, hop: Hop, from_uri: str, timeout: float) -> str:
        """Send one OPTIONS probe; its result arrives as a ``ProbeCompleted`` event."""
        now = self._now()
        probe_id, out = self.core.probe(hop, from_uri, timeout, now)
        self._emit(out, now)
        return probe_id

    def connection_failed(self, address: Address, transport: str = "tcp") -> None:
        """A stream connection to ``address`` could not be opened (refused; over TLS, its
        certificate not trusted), or broke (a reset): fail over the branches sent there at
        once."""
        now = self._now()
        self._emit(self.core.transport_failed(address, transport, now), now)

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _emit(self, out: Outbox, now: float) -> None:
        for send in out.sends:
            listener = send.listener
            if send.transport == "udp":
                endpoint = None
                if listener is not None:
                    endpoint = self.udp_by_id.get(listener.id)
                if endpoint is None:  # a response by Via: the first socket of its family
                    family = 6 if ":" in send.address[0] else 4
                    endpoint = self._udp_by_family.get(family, self.udp)
                if endpoint is not None:
                    endpoint.send(send.address, send.data)
                continue
            stream = self.tls if send.transport == "tls" else self.tcp
            if stream is not None:
                bind = self._stream_bind.get(listener.id) if listener is not None else None
                stream.send(send.address, send.data, send.fallback, bind)
        events = out.events
        if events:
            self._log(events)
            if self.on_events is not None:
                self.on_events(events)
        self._rearm(now)

    def _rearm(self, now: float) -> None:
        """Arm the loop's one wake-up for the core's next deadline, on the tick grid."""
        armed = self._timer_at
        if armed is not None and armed <= now + TIMER_TICK:
            return  # a wake-up within a tick reads the deadlines then, and re-arms
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        # Deadlines of one tick share a wake-up; never before the deadline itself (a wake-up
        # that finds nothing due would only arm itself again).
        wake = max(deadline, math.ceil(deadline / TIMER_TICK) * TIMER_TICK)
        if armed is not None and armed <= wake:
            return  # an earlier (or equal) wake-up is already armed; it re-arms after firing
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._timer_at = wake
        self._timer = loop.call_at(wake, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._now()
        try:
            self._emit(self.core.on_timer(now), now)
        except Exception as exc:  # the catch-all the module docstring describes
            self._failed("timer", exc, None)
            self._rearm(now)

    def _failed(self, stage: str, exc: Exception, source: Address | None) -> None:
        """Report and log (rate-limited, sanitised) a failure of the core, and go on."""
        error = f"{type(exc).__name__}: {sanitise(exc)}"
        if self._limited.allow():
            log.warning("handling a %s from %s failed, dropped: %s", stage, source, error)
            log.debug("the failure", exc_info=exc)
        if self.on_events is not None:
            self.on_events([HandlingFailed(stage, error)])

    def _log(self, events: Sequence[CoreEvent]) -> None:
        """The lines events call for, in one pass over them: malformed or refused messages
        (rate-limited), routing refusals and missing hash keys (one line per kind every
        10 s); what the peer wrote is sanitised. (And, in the same pass, the aliases TCP
        connections are offered, for the transport to take.)"""
        for event in events:
            if isinstance(event, AliasOffered):
                stream = self.tls if event.transport == "tls" else self.tcp
                if stream is not None:
                    stream.alias(event.source, event.alias)
                continue
            if isinstance(event, MessageRejected):
                if self._limited.allow():
                    log.warning(
                        "rejected %s (Call-ID %s) from %s: %s (%d)",
                        event.kind,
                        sanitise(event.call_id),
                        event.source,
                        sanitise(event.reason),
                        event.status,
                    )
            elif isinstance(event, RequestRefused):
                kind = f"refused:{event.cause}:{event.route}"
                earlier = self._quiet.admit(kind, self._now())
                if earlier is not None:
                    log.warning(
                        "refused %s (Call-ID %s) from %s: %s%s (%d; and %d more since the"
                        " last line)",
                        event.method,
                        sanitise(event.call_id),
                        event.source[0],
                        event.cause,
                        f" by route {event.route}" if event.route else "",
                        event.status,
                        earlier,
                    )
            elif isinstance(event, HashKeyMissing):
                earlier = self._quiet.admit(f"hash-key:{event.set_id}", self._now())
                if earlier is not None:
                    log.warning(
                        "request (Call-ID %s) from %s has no hash key for set %d: hashed by its"
                        " Call-ID (and %d more since the last line)",
                        sanitise(event.call_id),
                        event.source[0],
                        event.set_id,
                        earlier,
                    )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None  # nothing is armed: the next message arms afresh


def unknown_sockets(table: TableConfig, listeners: Mapping[str, object]) -> str | None:
    """Why ``table`` cannot be served by a proxy with ``listeners`` (by id), or None: the
    first destination whose ``socket=`` names none of them."""
    for dest_set in table.sets:
        for dest in dest_set.destinations:
            if dest.socket is not None and dest.socket not in listeners:
                return (
                    f"set {dest_set.set_id}, destination {dest.uri}: socket {dest.socket} is "
                    f"not a listener of this proxy (listening on {', '.join(listeners) or '-'})"
                )
    return None


def _pinned(table: DestinationTable) -> dict[str, str]:
    """The listener each gateway pinned with ``socket=`` is reached from, as routes name it."""
    return {
        destination_id(dest.host, dest.port, dest.transport): dest.socket
        for dest in (target.destination for target in table.targets())
        if dest.socket is not None
    }


def _destination_ids(table: DestinationTable) -> frozenset[str]:
    """Every gateway of ``table`` as signed routes name it: the only ones they may lead to."""
    return frozenset(
        destination_id(dest.host, dest.port, dest.transport)
        for dest in (target.destination for target in table.targets())
    )
