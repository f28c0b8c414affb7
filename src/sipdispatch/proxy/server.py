"""The composition root: build the parts, start them, serve until told to stop (SIGINT), or
drain first (SIGTERM, as Kubernetes stops pods), then close them.

The parts, each with one job: the settings (``settings.py``), the table keeper (the table
being served and its reloads, ``tablekeeper.py``), the health book (every destination's
health and who changes it, ``healthbook.py``), the prober, the engine around the sans-I/O
core with its transports, the metrics and the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from sipdispatch.dispatch.config import ProxyConfig
from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.uris import ListenAddress, parse_listen
from sipdispatch.proxy import dnsmetrics, routekeys
from sipdispatch.proxy.control.app import is_loopback, make_app, start_control
from sipdispatch.proxy.core import Address, Listener, Signer
from sipdispatch.proxy.engine import Engine
from sipdispatch.proxy.events import CoreEvent
from sipdispatch.proxy.healthbook import HealthBook
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.namebook import NameBook
from sipdispatch.proxy.prober import Prober
from sipdispatch.proxy.resolver import Resolver, parse_server
from sipdispatch.proxy.settings import (
    DEFAULTS,
    ProxySettings,
    core_settings,
    dns_policy,
    probe_settings,
)
from sipdispatch.proxy.tablekeeper import TableKeeper
from sipdispatch.proxy.tables import TableError, TableSource
from sipdispatch.proxy.traffic import EventFeed
from sipdispatch.proxy.transport import tls
from sipdispatch.proxy.transport.tcp import TcpTransport
from sipdispatch.proxy.transport.udp import UdpEndpoint, open_udp
from sipdispatch.proxy.transport.workerudp import WorkerEndpoint
from sipdispatch.proxy.workerlink import Follower, Leader, WorkerStats, join
from sipdispatch.proxy.workers import worker_ports

__all__ = ["ProxyServer", "run"]

log = logging.getLogger(__name__)
_WILDCARDS = ("0.0.0.0", "::", "")
CLOSE_GRACE = 3.0  # seconds the tasks get to finish once cancelled


def _advertised(text: str | None, listeners: list[ListenAddress]) -> Address:
    """The global ``--advertise`` address; none: the first listener's own."""
    if text:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        if not host:
            host, port = text, ""
        return (host.strip("[]"), int(port) if port else 5060)
    return _own_address(listeners[0])


def _own_address(listen: ListenAddress) -> Address:
    """Where a listener is reached when it advertises nothing: its address (a wildcard one:
    this host's)."""
    host = listen.socket.host
    if host in _WILDCARDS:
        host = socket.gethostbyname(socket.gethostname())
    return (host, listen.socket.port)


def make_listeners(listens: list[ListenAddress], default: str | None) -> tuple[Listener, ...]:
    """The listener records: each advertises its own ``advertise`` (no port: its own), else
    the global ``default`` (``--advertise``), else its own address. A wildcard listener
    writes its advertised host in Via, as nothing else reaches it."""
    fallback = _advertised(default, listens) if default else None
    made = []
    for listen in listens:
        sock = listen.socket
        if listen.advertise is not None:
            host, port = listen.advertise
            advertise = (host, sock.port if port is None else port)
        elif fallback is not None:
            # TLS has a port of its own: the advertised host, on the TLS listener's port
            advertise = (fallback[0], sock.port) if sock.transport == "tls" else fallback
        else:
            advertise = _own_address(listen)
        wildcard = sock.host in _WILDCARDS
        local = (advertise[0] if wildcard else sock.host, sock.port)
        family = 6 if ":" in sock.host else 4
        made.append(Listener(str(sock), sock.transport, local, advertise, family))
    return tuple(made)


class ProxyServer:
    """One running proxy: builds its parts and runs them (see the module docstring)."""

    def __init__(
        self,
        source: TableSource,
        settings: ProxySettings = DEFAULTS,
        companions: Sequence[Callable[[ProxyServer], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        self.settings = settings
        #: tasks that live as long as the proxy (e.g. reporting destination states to
        #: Kubernetes), started once the proxy serves and cancelled when it stops
        self.companions = companions
        self.engine: Engine | None = None
        self.listeners: list[ListenAddress] = []
        self.sockets: tuple[Listener, ...] = ()
        self.bound: dict[str, Address] = {}
        self._stop = asyncio.Event()
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._tcp: TcpTransport | None = None
        self._tls: tls.TlsTransport | None = None
        self._certificate: tls.CertificateWatch | None = None
        self._control: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: with --workers: the link to the other workers, this worker's own UDP sockets (by
        #: listener id) and the shared ones it also receives on
        self.link: Leader | Follower | None = None
        self._own_udp: dict[str, socket.socket] = {}
        self._shared_udp: list[UdpEndpoint] = []
        self.registry = CollectorRegistry()
        self.metrics = ProxyMetrics(
            self.registry, lambda: self.table, self._in_flight, self._failover_codes
        )
        self.metrics.watch_admission(
            self._refused_requests, self._refused_connections, self._tcp_open
        )
        self.health = HealthBook(
            probe_settings(None, settings),
            clock=self.now,
            max_dialog_age=settings.max_dialog_age,
            metrics=self.metrics,
        )
        resolver = Resolver(
            [parse_server(server) for server in settings.dns_servers], settings.dns_timeout
        )
        self.names = NameBook(resolver, self.now, dns_policy(settings))
        self.tables = TableKeeper(source, settings, self.health, self.metrics, self.names)
        dnsmetrics.watch_names(self.registry, lambda: self.table)
        self.metrics.watch_readiness(lambda: self.table is not None and not self._draining)
        self.prober: Prober | None = None

    # ------------------------------------------------------------------ ControlledProxy

    @property
    def table(self) -> DestinationTable | None:
        return self.engine.table if self.engine is not None else None

    def now(self) -> float:
        loop = self._loop
        if loop is None:  # looked up once: get_running_loop() costs a getpid() call
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def status(self) -> dict[str, Any]:
        core = self.engine.core if self.engine is not None else None
        return {
            "transactions": core.transaction_count if core else 0,
            "branches": core.branch_count if core else 0,
            "source": self.tables.source.description,
        }

    async def reload(self) -> None:
        await self.tables.reload()
        if isinstance(self.link, Leader):
            self.link.reloaded()

    def set_state(self, set_id: int, uri: str, code: str) -> None:
        self.health.set_state(set_id, uri, code)

    @property
    def draining(self) -> bool:
        return self._draining

    def _in_flight(self) -> int:
        return self.engine.core.transaction_count if self.engine is not None else 0

    def _refused_requests(self) -> dict[str, int]:
        return self.engine.core.admission_counts() if self.engine is not None else {}

    def _streams(self) -> list[TcpTransport]:
        """The stream transports: TCP, and TLS (whose connections are TCP's, counted as such)."""
        return [t for t in (self._tcp, self._tls) if t is not None]

    def _refused_connections(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for stream in self._streams():
            for reason, count in stream.counts.items():
                counts[reason] = counts.get(reason, 0) + count
        return counts

    def _tcp_open(self) -> tuple[int, int]:
        opened = [stream.open_connections for stream in self._streams()]
        return sum(i for i, _ in opened), sum(o for _, o in opened)

    def _failover_codes(self) -> frozenset[int]:
        engine = self.engine
        return engine.core.settings.failover_codes if engine is not None else frozenset()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        settings = self.settings
        # The control API comes first: liveness answers (and readiness says why not) while the
        # first table is awaited, which in Kubernetes mode can take until a DispatcherSet exists.
        if settings.control:
            host, _, port = settings.control.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            app = make_app(
                self, self.registry, _control_token(settings, host), open_locally=is_loopback(host)
            )
            self._control = await start_control(app, host, int(port))
            log.info("control API on http://%s", settings.control)
        loaded = await self.tables.first()
        table = self.tables.table
        assert table is not None
        local, advertise = self._listeners(loaded.config)
        keys = settings.secret_keys
        if keys:
            log.info("route keys: %s", routekeys.describe(keys))
            self.metrics.keys_in_use([routekeys.fingerprint(key) for key in keys])
        else:
            log.warning(
                "no shared secret configured: Record-Routes are valid for this process only"
            )
        signer = Signer(*keys)
        metrics, health = self.metrics, self.health

        def on_events(events: Sequence[CoreEvent]) -> None:
            metrics.observe(events)
            health.observe(events)

        # Each call's own events are handled compiled; the rest go to on_events.
        feed = EventFeed(health.traffic, self.now, health.apply_traffic, on_events)
        metrics.count_answers(feed.take_answered)

        wildcard = any(x.socket.host in _WILDCARDS for x in self.listeners)
        names = _wildcard_names() if wildcard else ()
        engine = Engine(
            core_settings(loaded.config, settings, local, advertise, names, listeners=self.sockets),
            table,
            signer,
            feed.feed,
        )
        engine.check(loaded.table)  # a socket= naming no listener: refused before serving
        self.engine = self.tables.engine = engine
        self._certificate = self._tls_certificate(loaded.config)
        await self._listen(engine)
        log.info(
            "hot path %s",
            "compiled with mypyc" if _compiled() else "in pure Python (see hack/build-native)",
        )
        log.info(
            "sipdispatch proxy listening on %s, %d sets, %d destinations",
            ", ".join(
                f"{x.id} (advertising {x.advertise[0]}:{x.advertise[1]})" for x in self.sockets
            ),
            len(table.sets),
            sum(len(s.targets) for s in table.sets.values()),
        )
        self.prober = self.health.probes = Prober(engine, health)
        follower = await self._link()
        probing = health.probing
        log.info(
            "probing %s every %gs (+/-%d%%), timeout %gs, thresholds %d failures / %d successes",
            probing.policy.mode.value,
            probing.interval,
            round(probing.jitter * 100),
            probing.timeout,
            probing.policy.failure_threshold,
            probing.policy.success_threshold,
        )
        loop = asyncio.get_running_loop()
        work = [
            self.tables.watch(),
            self.tables.follow_names(),
            # a follower takes the states the leader's probes decide
            *([] if follower else [self.prober.run()]),
            health.run_housekeeping(settings.housekeeping_interval),
            *(companion(self) for companion in self.companions),
        ]
        if self.link is not None:
            work.append(self.link.run())
        if self._certificate is not None:
            work.append(self._certificate.run())
        if settings.secret_file is not None:
            watch = routekeys.KeyFileWatch(
                settings.secret_file, signer, keys, on_change=self.metrics.keys_in_use
            )
            work.append(watch.run())
        for coroutine in work:
            # a task that fails says so at once: an exception nobody awaits would surface
            # only when the task is collected
            task = loop.create_task(coroutine)
            task.add_done_callback(_report_failure)
            self._tasks.append(task)

    def _listeners(self, config: ProxyConfig | None) -> tuple[dict[str, Address], Address]:
        """Make the listener records (``sockets``) from the command line, else the config;
        returns the first listener's address per transport and the default advertised one."""
        settings = self.settings
        listen = list(settings.listen) or (
            [str(s) for s in config.listeners()] if config is not None else []
        )
        try:
            self.listeners = [parse_listen(text) for text in listen or ["udp:127.0.0.1:5060"]]
        except ValueError as exc:
            raise TableError(f"listen: {exc}") from None
        # --advertise, else the config's: the default of listeners that advertise nothing
        default = settings.advertise or (config.advertise if config is not None else None)
        self.sockets = make_listeners(self.listeners, default)
        if settings.workers > 1:
            self.sockets = worker_ports(self.listeners, self.sockets, self._own_udp)
        local: dict[str, Address] = {}
        for listener in self.sockets:
            local.setdefault(listener.transport, listener.local)
        return local, _advertised(default, self.listeners)

    async def _link(self) -> bool:
        """Join the other workers (``workerlink.py``); True if this worker follows."""
        self.link = await join(self.settings, self.health, self.tables.reload, self._worker_stats)
        if isinstance(self.link, Leader):
            self.registry.register(self.link)
        return isinstance(self.link, Follower)

    def _worker_stats(self) -> WorkerStats:
        self.metrics.flush()
        answered = sum(
            sample.value
            for family in self.metrics.answered.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        cpu_ms = round(time.process_time() * 1000)
        return {"answered": int(answered), "cpu_ms": cpu_ms, "transactions": self._in_flight()}

    async def _listen(self, engine: Engine) -> None:
        workers = self.settings.workers > 1
        for listen, listener in zip(self.listeners, self.sockets, strict=True):
            host, port = listen.socket.host, listen.socket.port
            if listener.transport == "udp":
                endpoint = await open_udp(host, port, engine, listener, reuse_port=workers)
                self.bound.setdefault("udp", endpoint.local_address)
                own = self._own_udp.get(listener.id)
                if own is not None:  # requests leave from this worker's own port
                    self._shared_udp.append(endpoint)
                    mine = await open_udp(host, 0, engine, listener, sock=own)
                    endpoint = WorkerEndpoint(endpoint, mine)
                engine.add_udp(listener, endpoint)
            elif listener.transport == "tcp":
                if self._tcp is None:
                    self._tcp = TcpTransport(
                        engine,
                        on_error=engine.connection_failed,
                        max_message_size=self.settings.max_message_size,
                        limits=self.settings.tcp_limits(),
                    )
                    self._tcp.reuse_port = workers
                    engine.tcp = self._tcp
                self.bound.setdefault("tcp", await self._tcp.listen(host, port, listener))
                if host not in _WILDCARDS:
                    engine.bind_stream(listener, host)
            elif listener.transport == "tls":
                bound = await self._tls_transport(engine).listen(host, port, listener)
                self.bound.setdefault("tls", bound)
                if host not in _WILDCARDS:
                    engine.bind_stream(listener, host)
            else:
                raise TableError(f"listen: transport {listener.transport} is not supported yet")

    def _tls_certificate(self, config: ProxyConfig | None) -> tls.CertificateWatch | None:
        """The listeners' certificate, loaded and watched; None without a tls listener."""
        if not any(listen.socket.transport == "tls" for listen in self.listeners):
            return None
        settings = self.settings
        cert, key = settings.tls_cert, settings.tls_key
        if (cert is None or key is None) and config is not None and config.tls is not None:
            cert, key = Path(config.tls.cert_file), Path(config.tls.key_file)
        if cert is None or key is None:
            raise TableError("listen: a tls listener needs --tls-cert and --tls-key")
        try:
            context, expiry = tls.server_context(cert, key)
        except tls.CertificateError as exc:
            raise TableError(f"--tls-cert: {exc}") from None
        gauge = Gauge(
            "sipdispatch_tls_certificate_expiry_timestamp_seconds",
            "When the certificate of the TLS listeners expires (Unix seconds)",
            registry=self.registry,
        )
        gauge.set(expiry)
        return tls.CertificateWatch(cert, key, context, on_load=gauge.set)

    def _tls_transport(self, engine: Engine) -> tls.TlsTransport:
        if self._tls is None:
            assert self._certificate is not None
            self._tls = tls.TlsTransport(
                engine,
                on_error=functools.partial(engine.connection_failed, transport="tls"),
                max_message_size=self.settings.max_message_size,
                limits=self.settings.tcp_limits(),
                server=self._certificate.context,
                clients=tls.TlsClients(lambda: self.table),
            )
            self._tls.reuse_port = self.settings.workers > 1
            engine.tls = self._tls
        return self._tls

    def stop(self) -> None:
        self._stop.set()

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
        if isinstance(self.link, Leader):
            await self.link.close()
        for shared in self._shared_udp:
            shared.close()
        if self.engine is not None:
            self.engine.close()
            for endpoint in self.engine.udp_by_id.values():
                endpoint.close()
        if self._tcp is not None:
            await self._tcp.close()
        if self._tls is not None:
            await self._tls.close()


def _control_token(settings: ProxySettings, host: str) -> str:
    """The token of the control API's write calls: the one given; with none, none on a
    loopback address (only this host's clients reach it), else one made for this run and
    printed, so that writes are never open to the network."""
    if settings.control_token or is_loopback(host):
        return settings.control_token
    token = secrets.token_urlsafe(24)
    log.warning(
        "control API on %s with no token given: write calls need this one, made for this "
        "run (give --control-token-file to choose it): %s",
        settings.control,
        token,
    )
    return token


def _wildcard_names() -> set[str]:
    """What a listener on every address answers for: this host's name, its addresses, and
    loopback (the Request-URI domains of the request policy)."""
    hostname = socket.gethostname()
    names = {hostname, "localhost", "127.0.0.1", "::1"}
    with contextlib.suppress(OSError):  # a name that does not resolve: it and loopback only
        names.update(str(info[4][0]) for info in socket.getaddrinfo(hostname, None))
    return names


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (failure := task.exception()) is not None:
        log.error("task %s failed", task.get_coro(), exc_info=failure)


def _compiled() -> bool:
    """Whether the sans-I/O core was built as a C extension (setup.py, SIPDISPATCH_MYPYC)."""
    from sipdispatch.proxy import core  # noqa: PLC0415 - only to read where it was loaded from

    return not (core.__file__ or "").endswith(".py")


async def run(server: ProxyServer) -> None:
    """Serve until SIGINT (stop now) or SIGTERM (drain first, as Kubernetes stops pods)."""
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
            await server.drain(server.settings.drain_timeout)
    finally:
        await server.close()
