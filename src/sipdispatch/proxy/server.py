"""The composition root: build the table, the core and the listeners, then serve until told
to stop (SIGINT/SIGTERM), reloading the table file when it changes.

Health is fed from two sides, both through ``health.apply`` on the table being served: the
`Prober` (OPTIONS on a schedule) and the `TrafficObserver` (passive marking from real calls,
and the call-load counts; see ``traffic.py``).
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

from sipdispatch.dispatch import health
from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.dispatch.destinations import DestinationTable, TargetIndex
from sipdispatch.dispatch.health import HealthPolicy
from sipdispatch.dispatch.uris import SocketAddress, parse_socket
from sipdispatch.proxy.control.app import make_app, start_control
from sipdispatch.proxy.core import Address, CoreSettings
from sipdispatch.proxy.engine import Engine
from sipdispatch.proxy.events import (
    BranchFailed,
    CoreEvent,
    ProbeCompleted,
)
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.prober import Prober, ProbeResult, ProbeSettings
from sipdispatch.proxy.signing import Signer
from sipdispatch.proxy.tables import LoadedTable, TableError, TableSource
from sipdispatch.proxy.traffic import HealthNote, TrafficObserver
from sipdispatch.proxy.transport.tcp import TcpTransport
from sipdispatch.proxy.transport.udp import open_udp
from sipdispatch.sip.transaction import Timers

__all__ = ["ProxyOptions", "ProxyServer", "run"]

log = logging.getLogger(__name__)
_WILDCARDS = ("0.0.0.0", "::", "")
CLOSE_GRACE = 3.0  # seconds the tasks get to finish once cancelled


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
    #: on SIGTERM, how long transactions in flight may take to finish before the proxy exits
    drain_timeout: float = 10.0
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
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._tcp: TcpTransport | None = None
        self._control: web.AppRunner | None = None
        self.registry = CollectorRegistry()
        self.metrics = ProxyMetrics(self.registry, lambda: self.table, self._in_flight)
        self.loaded: LoadedTable | None = None
        self._probe_settings: tuple[ProbingSpec, ProbeSettings] | None = None
        self.prober: Prober | None = None
        self.index = TargetIndex()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.traffic = TrafficObserver(
            self.index, self.health_policy, self._failover_codes, options.max_dialog_age
        )

    # ------------------------------------------------------------------ ControlledProxy

    @property
    def table(self) -> DestinationTable | None:
        return self.engine.table if self.engine is not None else None

    def now(self) -> float:
        loop = self._loop
        if loop is None:  # looked up once: get_running_loop() costs a getpid() call
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

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
        # The control API comes first: liveness answers (and readiness says why not) while the
        # first table is awaited, which in Kubernetes mode can take until a DispatcherSet exists.
        if self.options.control:
            host, _, port = self.options.control.rpartition(":")
            app = make_app(self, self.registry, self.options.control_token)
            self._control = await start_control(app, host.strip("[]") or "127.0.0.1", int(port))
            log.info("control API on http://%s", self.options.control)
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
        self._start_task(loop, self._watch())
        self.prober = Prober(engine, self.probe_settings, self._probe_result)
        self._start_task(loop, self.prober.run())
        self._start_task(loop, self._housekeeping())
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
            self._start_task(loop, companion(self))

    def _start_task(self, loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> None:
        """A task that runs as long as the server; one that fails says so at once (an
        exception nobody awaits would surface only when the task is collected)."""
        task = loop.create_task(work)
        task.add_done_callback(_report_failure)
        self._tasks.append(task)

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
        fields = ("failover_codes", "max_attempts", "failover_on_timeout")
        changes = {
            f: getattr(wanted, f) for f in fields if getattr(wanted, f) != getattr(current, f)
        }
        if changes:
            core.settings = dataclasses.replace(current, **changes)
            log.info(
                "failover: now up to %d attempts, %s on timeouts",
                wanted.max_attempts,
                "failing over" if wanted.failover_on_timeout else "not failing over",
            )

    async def _watch(self) -> None:
        async for change in self.options.source.changes():
            if isinstance(change, TableError):
                log.error("table change not applied, still serving the previous table: %s", change)
            else:
                self._apply(change)

    def stop(self) -> None:
        self._stop.set()

    @property
    def draining(self) -> bool:
        return self._draining

    async def drain(self, grace: float) -> None:
        """Stop being ready and let transactions in flight finish (at most ``grace`` s).

        Kubernetes takes a terminating pod out of its Service's endpoints, so new calls stop
        arriving; calls being set up here get their answers, and dialogs already up go on
        through the other replicas (any replica routes them).
        """
        self._draining = True
        engine = self.engine
        if engine is None:
            return
        log.info("draining: %d transactions in flight", engine.core.transaction_count)
        deadline = asyncio.get_running_loop().time() + grace
        # Polled: the core is sans-I/O and signals nothing; 50 ms is nothing next to a call.
        while engine.core.transaction_count and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        log.info("drained: %d transactions left", engine.core.transaction_count)

    async def wait(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Let cancelled tasks finish their own cleanup (a companion deletes its report)
            # before the loop shuts down and would cancel that cleanup too.
            await asyncio.wait(self._tasks, timeout=CLOSE_GRACE)
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
    return dataclasses.replace(
        settings,
        failover_codes=codes,
        max_attempts=spec.max_attempts,
        failover_on_timeout=spec.on_timeout,
    )


async def run(options: ProxyOptions) -> None:
    """Serve until SIGINT (stop now) or SIGTERM (drain first, as Kubernetes stops pods)."""
    server = ProxyServer(options)
    loop = asyncio.get_running_loop()
    terminated = asyncio.Event()

    def on_sigterm() -> None:
        if terminated.is_set():
            server.stop()  # a second SIGTERM: stop now
        terminated.set()
        server.stop()

    loop.add_signal_handler(signal.SIGINT, server.stop)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await server.start()
        await server.wait()
        if terminated.is_set():
            await server.drain(options.drain_timeout)
    finally:
        await server.close()


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (failure := task.exception()) is not None:
        log.error("task %s failed", task.get_coro(), exc_info=failure)
