"""``sipdispatch-proxy --workers 2``: two processes share the SIP port (SO_REUSEPORT). Calls
from many source ports reach both; each worker's responses come back to its own Via port,
in-dialog requests (a caller's or a gateway's BYE) are routed by whichever worker takes them,
and set-state and reloads through the leader's control API reach the follower too. Over TCP,
sipp's connections (one per call) spread over both workers, and each call stays on the
connections of the worker that took it, whichever end hangs up."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from workerpeers import Gateway, place_call

from sipphelpers import SippGateway, SippLab, free_port

CALLS = 40
ANSWERED = "sipdispatch_worker_calls_answered_total"
CPU = "sipdispatch_worker_cpu_seconds_total"


@dataclass
class Workers:
    port: int
    control: int
    table: Path
    process: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/metrics") as page:
            return str(page.read().decode())

    def per_worker(self, name: str) -> dict[str, float]:
        """A per-worker family of the leader's /metrics, by worker."""
        found = re.findall(rf'^{name}\{{worker="(\d+)"\}} (\S+)$', self.metrics(), re.MULTILINE)
        return {worker: float(value) for worker, value in found}

    def call(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as page:
            return json.loads(page.read() or b"null")


def _wait(check: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    made = [Gateway(), Gateway(), Gateway()]
    yield made
    for gateway in made:
        gateway.close()


@contextlib.contextmanager
def _start(
    tmp_path: Path,
    table_text: str,
    *flags: str,
    build: list[str] | None = None,
    transport: str = "udp",
) -> Iterator[Workers]:
    """Two workers of ``build`` (None: the development install) listening on ``transport``."""
    table = tmp_path / "dispatcher.list"
    table.write_text(table_text)
    port, control = free_port(), free_port()
    found = shutil.which("sipdispatch-proxy", path=str(Path(sys.executable).parent))
    command = build or ([found] if found else [sys.executable, "-m", "sipdispatch.proxy"])
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *command,
                *("--workers", "2", "--dispatcher-list", str(table)),
                *("--listen", f"{transport}:127.0.0.1:{port}"),
                *("--control", f"127.0.0.1:{control}"),
                *flags,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    workers = Workers(port, control, table, process, log)
    try:
        _wait(lambda: "sipdispatch_workers_up 2.0" in workers.metrics())
        yield workers
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        text = log.read_text()
        assert code == 0, text
        assert "Traceback" not in text, text


def test_calls_over_two_workers_lose_nothing_whichever_worker_takes_each_message(
    tmp_path: Path, gateways: list[Gateway], proxy_build: list[str] | None
) -> None:
    """On both builds: the compiled one reads and writes UDP by the batch."""
    g1, g2, _ = gateways
    by_port = {g.port: g for g in gateways}
    table = f"1 {g1.uri}\n1 {g2.uri}\n"
    with _start(tmp_path, table, "--probe-mode", "off", build=proxy_build) as workers:
        placed = [place_call(workers.port, i, by_port if i % 2 else None) for i in range(CALLS)]
        assert len(placed) == CALLS
        answered = set(g1.invites) | set(g2.invites)
        assert answered == set(placed)
        assert set(g1.acks) | set(g2.acks) == set(placed)
        # the odd calls were hung up by the gateway, the even ones by the caller
        assert set(g1.byes) | set(g2.byes) == set(placed[0::2])
        assert g1.invites
        assert g2.invites
        # every INVITE's 200 counted once, by the worker that took the INVITE; both took
        # some (the counters reach the leader every second), and both spent CPU
        _wait(lambda: sum(workers.per_worker(ANSWERED).values()) >= CALLS)
        counts = workers.per_worker(ANSWERED)
        assert set(counts) == {"0", "1"}
        assert sum(counts.values()) == CALLS, counts
        assert min(counts.values()) >= CALLS // 5, counts
        assert min(workers.per_worker(CPU).values()) > 0
        print(f"calls answered per worker: {counts}")


@pytest.mark.sipp
@pytest.mark.parametrize("hangs_up", ["caller", "gateway"])
def test_calls_over_tcp_reach_both_workers_and_lose_nothing(
    tmp_path: Path, sipp_lab: SippLab, hangs_up: str
) -> None:
    """A sipp caller opening a connection per call: the kernel spreads the connections over
    the two workers; each dials the gateways itself, and the 200s, ACKs and BYEs of a call
    (the caller's, or the gateway's over the connection its INVITE came on) stay on the
    connections of the worker that took its INVITE."""
    by_gateway = hangs_up == "gateway"
    scenario = {"scenario": "uas_hangup", "extra_args": ["-d", "200"]} if by_gateway else {}
    g1 = sipp_lab.gateway("gw1", transport="tcp", **scenario)
    g2 = sipp_lab.gateway("gw2", transport="tcp", **scenario)
    table = f"1 {g1.uri}\n1 {g2.uri}\n"
    with _start(tmp_path, table, "--probe-mode", "off", transport="tcp") as workers:
        caller = sipp_lab.caller(
            f"127.0.0.1:{workers.port}",
            transport="tcp",
            rate=20,
            calls=CALLS,
            call_ms=200,
            extra_args=["-t", "tn", "-max_socket", "200"]  # a connection per call
            # the gateway's BYE: over the caller's connection (nothing listens at its Contact)
            + (["-key", "contact_port", str(free_port())] if by_gateway else []),
            **({"scenario": "uac_hungup", "recv_timeout_ms": 5000} if by_gateway else {}),
        )
        result = caller.run()
        assert result.failed == 0, result.summary() + "\n" + workers.log.read_text()[-3000:]
        assert result.successful == CALLS, result.summary()
        answered = {
            m.call_id
            for g in (g1, g2)
            for m in g.messages()
            if (m.direction, m.method) == ("R", "INVITE")
        }
        # (sipp logs only what it receives over per-call connections)
        ok = {
            m.call_id
            for m in caller.messages()
            if (m.direction, m.cseq_method, m.status) == ("R", "INVITE", 200)
        }
        assert len(answered) == CALLS
        assert ok == answered
        if by_gateway:  # and every gateway's BYE was answered by the caller, through the proxy
            _wait(lambda: _byes_answered(g1, g2) == answered, within=5.0)
        _wait(lambda: sum(workers.per_worker(ANSWERED).values()) >= CALLS)
        counts = workers.per_worker(ANSWERED)
        assert sum(counts.values()) == CALLS, counts
        assert min(counts.values()) >= CALLS // 5, counts
        print(f"calls answered per worker over TCP: {counts}")


def _byes_answered(*gateways: SippGateway) -> set[str]:
    return {
        m.call_id
        for g in gateways
        for m in g.messages()
        if (m.direction, m.cseq_method, m.status) == ("R", "BYE", 200)
    }


def test_set_state_and_a_reload_through_the_control_api_reach_both_workers(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    g1, g2, g3 = gateways
    flags = ("--probe-interval", "0.5", "--probe-timeout", "0.4")
    with _start(tmp_path, f"1 {g1.uri}\n1 {g2.uri}\n", *flags) as workers:
        workers.call("PUT", "/v1/destinations/state", {"set": 1, "uri": g1.uri, "state": "dx"})
        time.sleep(0.3)  # the leader's link carries it at once; a margin for the follower
        placed = [place_call(workers.port, i, None) for i in range(CALLS)]
        assert not set(placed) & set(g1.invites), "a worker sent a call to the DX destination"
        assert set(placed) <= set(g2.invites)
        _wait(lambda: min(workers.per_worker(ANSWERED).values()) >= CALLS // 5)

        # A new table of the same size and mtime: the file poller cannot see it, only the
        # control API's reload does, and the leader passes it on.
        before = workers.table.stat()
        text = f"1 {g3.uri}\n"
        assert len(str(g3.port)) == len(str(g2.port))
        workers.table.write_text(text + " " * (before.st_size - len(text) - 1) + "\n")
        os.utime(workers.table, ns=(before.st_atime_ns, before.st_mtime_ns))
        workers.call("POST", "/v1/reload")
        time.sleep(0.3)
        again = [place_call(workers.port, CALLS + i, None) for i in range(CALLS)]
        assert set(again) <= set(g3.invites), "a worker still serves the old table"
        counts = workers.per_worker(ANSWERED)
        print(f"calls answered per worker: {counts}")


def test_a_worker_that_cannot_start_stops_them_all_with_its_exit_code(tmp_path: Path) -> None:
    """A port held by a socket without SO_REUSEPORT: no worker can bind it; the supervisor
    restarts none of them and exits with their code, the error on stderr."""
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.1:9\n")
    found = shutil.which("sipdispatch-proxy", path=str(Path(sys.executable).parent))
    command = [found] if found else [sys.executable, "-m", "sipdispatch.proxy"]
    with socket.socket(type=socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        done = subprocess.run(
            [
                *command,
                *("--workers", "2", "--dispatcher-list", str(table)),
                *("--listen", f"udp:127.0.0.1:{port}", "--control", "off"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert "cannot listen" in done.stderr
    assert "started (pid" in done.stderr
    assert done.stderr.count("started (pid") == 2, "no worker was started again"
