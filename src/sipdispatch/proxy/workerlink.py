"""The workers' link: the leader tells the other workers what they cannot learn themselves.

Worker 0, the leader, probes the destinations and serves the control API; the others follow
it over a unix socket in a directory the supervisor makes (uvloop refuses Linux's abstract
names), one JSON line per message. Down the link go every change of a destination's
two-letter state (probe results, set-state, Retry-After drains and their ends) and every
reload the control API asks for; every destination's state goes again every second (a
follower that connects gets it at once), which also ends what a follower decided alone: a
destination its own calls marked down (passive health) follows the leader again within a
second, since only the leader probes it back up. Up the link each follower
sends its counters every second (calls answered, CPU: read, never counted per message), which
the leader shows per worker on ``/metrics``.

So the states that decide routing are the leader's: its probes, its set-states, and the
passive marks of the calls it carries (a follower's own last at most that second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sipdispatch.dispatch.health import InvalidStateError
from sipdispatch.proxy.healthbook import HealthBook, HealthChange
from sipdispatch.proxy.settings import ProxySettings

__all__ = ["Follower", "Leader", "WorkerStats", "join", "link_address"]

log = logging.getLogger(__name__)
#: how often a follower sends its counters, and retries a lost link
STATS_INTERVAL = 1.0
RETRY_INTERVAL = 0.2


def link_address(directory: str) -> str:
    """The unix socket of one supervisor's workers, in its own ``directory``."""
    return os.path.join(directory, "link")


#: what a worker reports of itself: calls answered, CPU milliseconds, transactions in flight
WorkerStats = dict[str, int]


class Leader(Collector):
    """Worker 0's end: serves the followers, and collects their counters for ``/metrics``."""

    def __init__(
        self, path: str, health: HealthBook, own: Callable[[], WorkerStats], workers: int
    ) -> None:
        self.path = path
        self.health = health
        self.own = own
        self.workers = workers
        self.stats: dict[int, WorkerStats] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # a leader that was restarted
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        self.health.watchers.append(self._changed)

    async def run(self) -> None:
        """Every destination's state to every follower, every ``STATS_INTERVAL`` seconds."""
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            if self._writers:
                self._send(self._snapshot())

    def _changed(self, change: HealthChange) -> None:
        if change.code != change.previous or change.source == "set-state":
            dest = change.target.destination
            self._send({"health": [[dest.set_id, dest.uri, change.code]]})

    def reloaded(self) -> None:
        """The control API reloaded the table: every follower reloads too."""
        self._send({"reload": True})

    def _snapshot(self) -> dict[str, Any]:
        table = self.health.table
        states = []
        if table is not None:
            for dest_set in table.sets.values():
                for target in dest_set.targets:
                    dest = target.destination
                    states.append([dest.set_id, dest.uri, target.runtime.health.code])
        return {"health": states}

    def _send(self, message: dict[str, Any], to: asyncio.StreamWriter | None = None) -> None:
        line = json.dumps(message).encode() + b"\n"
        for writer in [to] if to is not None else list(self._writers):
            if writer.is_closing():
                self._writers.discard(writer)
            else:
                writer.write(line)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._send(self._snapshot(), writer)
        index = None
        try:
            while line := await reader.readline():
                stats = json.loads(line)["stats"]
                index = int(stats["worker"])
                self.stats[index] = {k: int(v) for k, v in stats.items()}
        except (ConnectionError, ValueError, KeyError) as exc:
            log.warning("worker link: a follower's message was not understood: %s", exc)
        finally:
            self._writers.discard(writer)
            if index is not None:
                self.stats.pop(index, None)
            writer.close()

    def collect(self) -> Iterator[Metric]:
        every = {0: {**self.own(), "worker": 0}, **self.stats}
        answered = CounterMetricFamily(
            "sipdispatch_worker_calls_answered",
            "Requests a destination answered with 2xx, by the worker process that forwarded them",
            labels=["worker"],
        )
        cpu = CounterMetricFamily(
            "sipdispatch_worker_cpu_seconds",
            "CPU time (user and system) of each worker process",
            labels=["worker"],
        )
        in_flight = GaugeMetricFamily(
            "sipdispatch_worker_transactions",
            "Transactions in flight in each worker process",
            labels=["worker"],
        )
        for index, stats in sorted(every.items()):
            answered.add_metric([str(index)], stats.get("answered", 0))
            cpu.add_metric([str(index)], stats.get("cpu_ms", 0) / 1000)
            in_flight.add_metric([str(index)], stats.get("transactions", 0))
        up = GaugeMetricFamily(
            "sipdispatch_workers_up", "Worker processes the leader hears from (itself included)"
        )
        up.add_metric([], len(every))
        yield answered
        yield cpu
        yield in_flight
        yield up

    async def close(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Follower:
    """A worker's end: applies what the leader says, and reports its own counters."""

    def __init__(
        self,
        path: str,
        index: int,
        health: HealthBook,
        reload: Callable[[], Awaitable[None]],
        own: Callable[[], WorkerStats],
    ) -> None:
        self.path = path
        self.index = index
        self.health = health
        self.reload = reload
        self.own = own
        self.applied = 0

    async def run(self) -> None:
        """Follow the leader for as long as the worker runs, connecting again when it goes."""
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
            except OSError:
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            reporting = asyncio.get_running_loop().create_task(self._report(writer))
            try:
                while line := await reader.readline():
                    await self._apply(json.loads(line))
            except (ConnectionError, ValueError) as exc:
                log.warning("worker link: lost the leader: %s", exc)
            finally:
                reporting.cancel()
                writer.close()
            await asyncio.sleep(RETRY_INTERVAL)

    async def _report(self, writer: asyncio.StreamWriter) -> None:
        while True:
            stats = {**self.own(), "worker": self.index, "pid": os.getpid()}
            writer.write(json.dumps({"stats": stats}).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(STATS_INTERVAL)

    async def _apply(self, message: dict[str, Any]) -> None:
        if message.get("reload"):
            await self.reload()
        table = self.health.table
        for set_id, uri, code in message.get("health", ()):
            try:
                if table is not None and table.find(set_id, uri).runtime.health.code == code:
                    continue  # the snapshot's usual case: nothing to do
                self.health.set_state(int(set_id), str(uri), str(code).lower())
            except (LookupError, InvalidStateError) as exc:
                # a table this worker has not loaded yet: its own reload brings the state
                log.debug("worker link: state %s of %s not applied: %s", code, uri, exc)
                continue
            self.applied += 1


async def join(
    settings: ProxySettings,
    health: HealthBook,
    reload: Callable[[], Awaitable[None]],
    own: Callable[[], WorkerStats],
) -> Leader | Follower | None:
    """This worker's end of the link: the leader's, started; a follower's, to run; None
    without workers."""
    if settings.workers <= 1 or not settings.worker_link:
        return None
    if settings.worker_index == 0:
        leader = Leader(settings.worker_link, health, own, settings.workers)
        await leader.start()
        return leader
    return Follower(settings.worker_link, settings.worker_index, health, reload, own)
