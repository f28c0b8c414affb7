"""The composition root: build the table, the core and the listeners, then serve until told
to stop (SIGINT/SIGTERM), reloading the table file when it changes.

Health is fed from two sides, both through ``health.apply`` on the table being served: the
`Prober` (OPTIONS on a schedule) and `TrafficObserver` (passive marking from real calls:
a branch that failed with a failover code, a timeout or a transport error counts like a failed
probe; a 486 or a 404 says nothing about the destination). `TrafficObserver` also keeps the
call-load counts (algorithm 10): a 2xx to an INVITE starts a dialog on its destination, the BYE
passing through ends it, and a dialog whose BYE this replica never saw (it went through another
replica, or never came) is ended after ``max_dialog_age``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sipdispatch.proxy.control.app import make_app, start_control
from sipdispatch.proxy.core import Address, CoreSettings
from sipdispatch.proxy.dispatch import health
from sipdispatch.proxy.dispatch.config import ProbingSpec
from sipdispatch.proxy.dispatch.destinations import DestinationTable, Runtime, Target
from sipdispatch.proxy.dispatch.health import HealthPolicy
from sipdispatch.proxy.dispatch.uris import SocketAddress, parse_socket
from sipdispatch.proxy.engine import Engine
from sipdispatch.proxy.events import (
    BranchAnswered,
    BranchFailed,
    CoreEvent,
    DialogEnded,
    ProbeCompleted,
)
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.prober import Prober, ProbeResult, ProbeSettings, TargetIndex
from sipdispatch.proxy.signing import Signer
from sipdispatch.proxy.sip.transaction import Timers
from sipdispatch.proxy.tables import LoadedTable, TableError, TableSource
from sipdispatch.proxy.transport.tcp import TcpTransport
from sipdispatch.proxy.transport.udp import open_udp

__all__ = ["HealthNote", "ProxyOptions", "ProxyServer", "TrafficObserver", "run"]

log = logging.getLogger(__name__)
_WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ProxyOptions:
    source: TableSource
    #: ``udp:IP:PORT`` / ``tcp:IP:PORT``; empty means "what the config file says"
    listen: list[str] = field(default_factory=list)
    #: ``host[:port]`` written in Record-Route; default: the first listener's address
    advertise: str | None = None
    secret: bytes | None = None
    answer_timeout: float = 5.0
    #: RFC 3261 T1 (RTT estimate); every transaction timer scales with it
    timer_t1: float = 0.5
    #: ``IP:PORT`` of the HTTP control API; None disables it
    control: str | None = "127.0.0.1:8080"
    #: bearer token required by write calls of the control API ("" = none)
    control_token: str = ""
    #: tasks that live as long as the proxy (e.g. reporting destination states to Kubernetes),
    #: started once the proxy serves and cancelled when it stops
    companions: Sequence[Callable[[ProxyServer], Coroutine[Any, Any, None]]] = ()
    #: probing and health thresholds for a table without a YAML config (a dispatcher.list);
    #: a YAML config's own ``probing`` section takes precedence
    probing: ProbingSpec = field(default_factory=ProbingSpec)
    #: a dialog whose BYE was never seen stops counting as a call on its destination after this
    max_dialog_age: float = 4 * 3600.0
    #: how often Retry-After drains and stale dialogs are expired
    housekeeping_interval: float = 0.5


@dataclass(frozen=True, slots=True)
class HealthNote:
    """A result folded into a destination's health, for logs and metrics."""

    target: Target
    result: health.Result | None  # None: not a result (a drain's end, an admin's set-state)
    previous: str  # the two-letter code before
    event: health.Event | None
    source: str  # "probe", "traffic", "drain", "set-state"


class TrafficObserver:
    """Passive marking and call-load accounting from the core's events; pure (``now`` given).

    ``index`` follows the table being served; ``policy`` and ``failover_codes`` are read at
    every event, so a reload's new thresholds apply at once.
    """

    def __init__(
        self,
        index: TargetIndex,
        policy: Callable[[], HealthPolicy],
        failover_codes: Callable[[], frozenset[int]],
        max_dialog_age: float,
    ) -> None:
        self.index = index
        self.policy = policy
        self.failover_codes = failover_codes
        self.max_dialog_age = max_dialog_age
        #: Call-ID -> dialogs answered (destination runtime, when); oldest first
        self._dialogs: dict[str, list[tuple[Runtime, float]]] = {}

    @property
    def dialogs(self) -> int:
        return sum(len(entries) for entries in self._dialogs.values())

    def marks(self, status: int) -> bool:
        """Whether a branch that ended with ``status`` says the destination is unwell."""
        return status in (408, 503) or status in self.failover_codes()

    def observe(self, event: CoreEvent, now: float) -> HealthNote | None:
        if isinstance(event, BranchFailed):
            return self._failed(event, now)
        if isinstance(event, BranchAnswered):
            return self._answered(event, now)
        if isinstance(event, DialogEnded):
            self._ended(event.call_id)
        return None

    def _failed(self, event: BranchFailed, now: float) -> HealthNote | None:
        if not self.marks(event.status):
            return None
        target = self.index.by_uri(event.set_id, event.destination)
        if target is None:
            return None
        if event.status == 408:
            reason = "call timed out"
        elif event.status == 503:
            reason = "call failed: 503 or transport error"
        else:
            reason = f"call answered {event.status}"
        return self._apply(target, health.Result.failure(reason), now)

    def _answered(self, event: BranchAnswered, now: float) -> HealthNote | None:
        target = self.index.by_uri(event.set_id, event.destination)
        if target is None:
            return None
        if event.method == "INVITE" and event.call_id:
            runtime = target.runtime
            runtime.call_started()
            self._dialogs.setdefault(event.call_id, []).append((runtime, now))
        if target.runtime.health.learned is health.HealthState.TRYING:
            # A destination answering calls is not failing: the failure streak is broken.
            return self._apply(target, health.Result.success(reason="answered a call"), now)
        return None

    def _apply(self, target: Target, result: health.Result, now: float) -> HealthNote:
        record = target.runtime.health
        previous = record.code
        event = health.apply(record, result, self.policy(), now)
        return HealthNote(target, result, previous, event, "traffic")

    def _ended(self, call_id: str) -> None:
        entries = self._dialogs.get(call_id)
        if not entries:
            return
        runtime, _ = entries.pop()
        runtime.call_ended()
        if not entries:
            del self._dialogs[call_id]

    def expire(self, now: float) -> int:
        """End dialogs older than ``max_dialog_age``; how many were ended."""
        ended = 0
        limit = now - self.max_dialog_age
        while self._dialogs:
            call_id, entries = next(iter(self._dialogs.items()))
            if entries[0][1] > limit:
                break
            del self._dialogs[call_id]
            for runtime, started in entries:
                if started <= limit:
                    runtime.call_ended()
                    ended += 1
                else:  # a younger dialog on the same Call-ID: keep it, at the back
                    self._dialogs.setdefault(call_id, []).append((runtime, started))
        return ended


def _advertised(text: str | None, listeners: list[SocketAddress]) -> Address:
    first = listeners[0]
    if text:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        if not host:
            host, port = text, ""
        return (host.strip("[]"), int(port) if port else 5060)
    host = first.host
    if host in _WILDCARDS:
        host = socket.gethostbyname(socket.gethostname())
    return (host, first.port)


class ProxyServer:
    """One running proxy: listeners, engine, table reloads."""

    def __init__(self, options: ProxyOptions) -> None:
        self.options = options
        self.engine: Engine | None = None
        self.listeners: list[SocketAddress] = []
        self.bound: dict[str, Address] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._tcp: TcpTransport | None = None
        self._control: web.AppRunner | None = None
        self.registry = CollectorRegistry()
        self.metrics = ProxyMetrics(self.registry, lambda: self.table, self._in_flight)
        self.loaded: LoadedTable | None = None
        self._probe_settings: tuple[ProbingSpec, ProbeSettings] | None = None
        self.prober: Prober | None = None
        self.index = TargetIndex()
        self.traffic = TrafficObserver(
            self.index, self.health_policy, self._failover_codes, options.max_dialog_age
        )

    # ------------------------------------------------------------------ ControlledProxy

    @property
    def table(self) -> DestinationTable | None:
        return self.engine.table if self.engine is not None else None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def _in_flight(self) -> int:
        return self.engine.core.transaction_count if self.engine is not None else 0

    def status(self) -> dict[str, Any]:
        core = self.engine.core if self.engine is not None else None
        return {
            "transactions": core.transaction_count if core else 0,
            "branches": core.branch_count if core else 0,
            "source": self.options.source.description,
        }

    def set_state(self, set_id: int, uri: str, code: str) -> None:
        table = self.table
        if table is None:
            raise LookupError("no destination table loaded yet")
        target = table.find(set_id, uri)
        previous = target.runtime.health.code
        event = table.set_state(set_id, uri, code, self.now())
        log.info("set %d destination %s set to %s by the control API", set_id, uri, code.upper())
        self._health_changed(HealthNote(target, None, previous, event, "set-state"))

    # ------------------------------------------------------------------ health

    def probe_settings(self) -> ProbeSettings:
        """Probing as configured now: the YAML config's, else the command line's."""
        loaded = self.loaded
        spec = loaded.config.probing if loaded and loaded.config else self.options.probing
        cached = self._probe_settings
        if cached is None or cached[0] is not spec:
            cached = self._probe_settings = (spec, ProbeSettings.from_spec(spec))
        return cached[1]

    def health_policy(self) -> HealthPolicy:
        return self.probe_settings().policy

    def _failover_codes(self) -> frozenset[int]:
        engine = self.engine
        return engine.core.settings.failover_codes if engine is not None else frozenset()

    def _on_events(self, events: Sequence[CoreEvent]) -> None:
        self.metrics.observe(events)
        engine = self.engine
        if engine is None:
            return
        now = self.now()
        self.index.refresh(engine.table)
        for event in events:
            if isinstance(event, ProbeCompleted):
                if self.prober is not None:
                    self.prober.on_probe_completed(event, now)
                continue
            if isinstance(event, BranchFailed) and self._failover_triggered(event):
                self.metrics.failover(event.set_id, event.destination)
            note = self.traffic.observe(event, now)
            if note is not None:
                self._health_changed(note)

    def _failover_triggered(self, event: BranchFailed) -> bool:
        if event.status not in self._failover_codes():
            return False
        table = self.table
        dest_set = table.sets.get(event.set_id) if table is not None else None
        return dest_set is None or dest_set.algorithm != "parallel"

    def _probe_result(self, outcome: ProbeResult) -> None:
        self.metrics.probe(outcome.target.destination.set_id, outcome.result)
        self._health_changed(
            HealthNote(outcome.target, outcome.result, outcome.previous, outcome.event, "probe")
        )

    def _health_changed(self, note: HealthNote) -> None:
        """Log a change of two-letter code; count eligibility changes (Up/Down events)."""
        dest = note.target.destination
        record = note.target.runtime.health
        if record.code == note.previous:
            return
        event = note.event
        level = logging.WARNING if isinstance(event, health.DestinationDown) else logging.INFO
        direction = {health.DestinationUp: " UP", health.DestinationDown: " DOWN"}
        log.log(
            level,
            "set %d destination %s: %s -> %s (%s: %s)%s",
            dest.set_id,
            dest.uri,
            note.previous,
            record.code,
            note.source,
            record.reason,
            "" if event is None else direction[type(event)],
        )
        if event is not None:
            self.metrics.health_event(dest.set_id, dest.uri, event)

    async def _housekeeping(self) -> None:
        """Retry-After drains that are due, dialogs that outlived ``max_dialog_age``."""
        while True:
            await asyncio.sleep(self.options.housekeeping_interval)
            table = self.table
            if table is None:
                continue
            now = self.now()
            for target, event in table.expire(now):
                self._health_changed(HealthNote(target, None, "DR", event, "drain"))
            expired = self.traffic.expire(now)
            if expired:
                log.info(
                    "%d dialogs outlived %gs without a BYE here: no longer counted as calls",
                    expired,
                    self.options.max_dialog_age,
                )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loaded = await self.options.source.first()
        self.loaded = loaded
        listen = self.options.listen or (
            [str(s) for s in loaded.config.listeners()] if loaded.config else []
        )
        if not listen:
            listen = ["udp:127.0.0.1:5060"]
        self.listeners = [parse_socket(text) for text in listen]
        loop = asyncio.get_running_loop()
        table = DestinationTable.build(loaded.table, None, loop.time(), policy=self.health_policy())
        advertise = _advertised(self.options.advertise, self.listeners)
        local: dict[str, Address] = {}
        for listener in self.listeners:
            host = advertise[0] if listener.host in _WILDCARDS else listener.host
            local.setdefault(listener.transport, (host, listener.port))
        settings = _core_settings(loaded, local, advertise, self.options)
        if self.options.secret is None:
            log.warning(
                "no shared secret configured: Record-Routes are valid for this process only"
            )
        engine = Engine(settings, table, Signer(self.options.secret), self._on_events)
        self.engine = engine
        for listener in self.listeners:
            if listener.transport == "udp":
                if engine.udp is not None:
                    raise TableError("only one UDP listener is supported")
                engine.udp = await open_udp(listener.host, listener.port, engine)
                self.bound["udp"] = engine.udp.local_address
            elif listener.transport == "tcp":
                if self._tcp is None:
                    self._tcp = TcpTransport(engine, on_error=engine.connection_failed)
                    engine.tcp = self._tcp
                self.bound["tcp"] = await self._tcp.listen(listener.host, listener.port)
            else:
                raise TableError(f"listen: transport {listener.transport} is not supported yet")
        count = sum(len(s.targets) for s in table.sets.values())
        log.info(
            "hot path %s",
            "compiled with mypyc" if _compiled() else "in pure Python (see hack/build-native)",
        )
        log.info(
            "sipdispatch proxy listening on %s, advertising %s:%d, %d sets, %d destinations",
            ", ".join(str(listener) for listener in self.listeners),
            *advertise,
            len(table.sets),
            count,
        )
        if self.options.control:
            host, _, port = self.options.control.rpartition(":")
            app = make_app(self, self.registry, self.options.control_token)
            self._control = await start_control(app, host.strip("[]") or "127.0.0.1", int(port))
            log.info("control API on http://%s", self.options.control)
        self._tasks.append(loop.create_task(self._watch()))
        self.prober = Prober(engine, self.probe_settings, self._probe_result)
        self._tasks.append(loop.create_task(self.prober.run()))
        self._tasks.append(loop.create_task(self._housekeeping()))
        probing = self.probe_settings()
        log.info(
            "probing %s every %gs (+/-%d%%), timeout %gs, thresholds %d failures / %d successes",
            probing.policy.mode.value,
            probing.interval,
            round(probing.jitter * 100),
            probing.timeout,
            probing.policy.failure_threshold,
            probing.policy.success_threshold,
        )
        for companion in self.options.companions:
            self._tasks.append(loop.create_task(companion(self)))

    async def reload(self) -> None:
        """Read the table again; on error keep serving the previous table and raise."""
        try:
            loaded = await self.options.source.reload()
        except TableError as exc:
            log.error("reload failed, still serving the previous table: %s", exc)
            raise
        self._apply(loaded)

    def _apply(self, loaded: LoadedTable) -> None:
        """Swap in a new table built from ``loaded``, carrying learned health across."""
        assert self.engine is not None
        now = asyncio.get_running_loop().time()
        self.loaded = loaded
        policy = self.health_policy()
        table = DestinationTable.build(loaded.table, self.engine.table, now, policy=policy)
        self.engine.swap_table(table)
        self._refresh_failover(loaded)
        if self.prober is not None:
            self.prober.poke()
        count = sum(len(s.targets) for s in table.sets.values())
        log.info(
            "table from %s applied: %d sets, %d destinations",
            self.options.source.description,
            len(table.sets),
            count,
        )

    def _refresh_failover(self, loaded: LoadedTable) -> None:
        """A config's failover section applies from the next request on, like its sets."""
        assert self.engine is not None
        core = self.engine.core
        current = core.settings
        wanted = _core_settings(loaded, current.local, current.advertise, self.options)
        if (wanted.failover_codes, wanted.max_attempts) != (
            current.failover_codes,
            current.max_attempts,
        ):
            core.settings = dataclasses.replace(
                current, failover_codes=wanted.failover_codes, max_attempts=wanted.max_attempts
            )
            log.info("failover: now up to %d attempts", wanted.max_attempts)

    async def _watch(self) -> None:
        async for change in self.options.source.changes():
            if isinstance(change, TableError):
                log.error("table change not applied, still serving the previous table: %s", change)
            else:
                self._apply(change)

    def stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._control is not None:
            await self._control.cleanup()
        if self.engine is not None:
            self.engine.close()
            if self.engine.udp is not None and self.engine.udp.transport is not None:
                self.engine.udp.transport.close()
        if self._tcp is not None:
            await self._tcp.close()


def _compiled() -> bool:
    """Whether the sans-I/O core was built as a C extension (setup.py, SIPDISPATCH_MYPYC)."""
    from sipdispatch.proxy import core  # noqa: PLC0415 - only to read where it was loaded from

    return not (core.__file__ or "").endswith(".py")


def _core_settings(
    loaded: LoadedTable, local: dict[str, Address], advertise: Address, options: ProxyOptions
) -> CoreSettings:
    settings = CoreSettings(
        local=local,
        advertise=advertise,
        answer_timeout=options.answer_timeout,
        timers=Timers(t1=options.timer_t1, t2=max(4.0, 8 * options.timer_t1), t4=5.0),
    )
    if loaded.config is None:
        return settings
    spec = loaded.config.failover
    codes = frozenset(code for code in range(300, 700) if spec.triggers(code))
    if spec.on_timeout:
        codes |= {408}  # a 408 reply is a timeout further down: it fails over like one
    return dataclasses.replace(settings, failover_codes=codes, max_attempts=spec.max_attempts)


async def run(options: ProxyOptions) -> None:
    server = ProxyServer(options)
    await server.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    try:
        await server.wait()
    finally:
        await server.close()
