"""Worker processes: ``--workers N`` forks N copies of the proxy sharing its ports.

Every worker binds the SIP listening ports with SO_REUSEPORT, so the kernel spreads arriving
datagrams and connections over them, hashing on the source: one caller's retransmissions and
CANCEL land on the worker that has its INVITE as long as the worker set is stable. Each worker
also binds a UDP port of its own on every UDP listener's address, sends from it and writes it in
its Via: responses to its requests come straight back to it. Record-Route keeps the shared
port, and any worker routes an in-dialog request (the Record-Route is signed, not stored).

The supervisor (the process started) only forks, forwards SIGTERM/SIGINT and restarts a worker
that dies; a worker that fails within ``SETTLE`` seconds of starting (a bad table, a port in
use) stops them all, with its exit code. It runs no event loop: it forks before any exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType

from sipdispatch.dispatch.uris import ListenAddress
from sipdispatch.proxy.core import Listener

__all__ = ["available_cores", "own_port", "supervise", "worker_ports"]

log = logging.getLogger(__name__)
#: a worker that exits sooner than this after starting fails the whole (no restart loop)
SETTLE = 5.0
RESTART_DELAY = 0.5


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container's cpuset limits)."""
    return len(os.sched_getaffinity(0))


def own_port(listener: Listener, host: str) -> tuple[Listener, socket.socket]:
    """A worker's own UDP socket on ``host`` (the listener's bound address), and the listener
    record writing its port in Via; Record-Route keeps the shared, advertised address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    port = int(sock.getsockname()[1])
    return replace(listener, local=(listener.local[0], port)), sock


def worker_ports(
    listens: Sequence[ListenAddress],
    listeners: tuple[Listener, ...],
    sockets: dict[str, socket.socket],
) -> tuple[Listener, ...]:
    """A worker's listeners: each UDP one writes a port of this worker's own in Via (its
    socket put in ``sockets`` by listener id)."""
    made = []
    for listen, listener in zip(listens, listeners, strict=True):
        if listener.transport == "udp":
            worker_listener, sock = own_port(listener, listen.socket.host)
            sockets[listener.id] = sock
            made.append(worker_listener)
        else:
            made.append(listener)
    return tuple(made)


def supervise(count: int, serve: Callable[[int], int]) -> int:
    """Run ``serve(index)`` in ``count`` forked workers until they all end; returns the
    first failure's exit code (0 when they all stop cleanly)."""
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
    stopping: list[int] = []  # the signal that stops them, once one came

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            code = 1
            try:
                code = serve(index)
            except KeyboardInterrupt:
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = (index, time.monotonic())
        log.info("worker %d started (pid %d)", index, pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    result = 0
    try:
        for index in range(count):
            start(index)
        while children:
            pid, status = os.wait()
            if pid not in children:
                continue
            index, started = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                result = result or (code if code > 0 else 0)
                continue
            log.warning("worker %d (pid %d) ended with %d", index, pid, code)
            if time.monotonic() - started < SETTLE and code != 0:
                result = code if code > 0 else 1
                forward(signal.SIGTERM, None)
                continue
            time.sleep(RESTART_DELAY)
            start(index)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return result
