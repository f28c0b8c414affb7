"""Admission control on a running proxy, under the attacks it is for: an INVITE flood from one
source while another places calls, and thousands of idle TCP connections while calls go on.

Each test prints what it measured (the flood's rate, the proxy's memory): run with ``-s`` to
see it.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy

from sipphelpers import SippLab

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

FLOOD = Path(__file__).with_name("udpflood.py")
FLOOD_SOURCE = "127.0.0.50"
FLOOD_RATE = ("20000", "10")  # INVITEs per second, seconds
IDLE_SOURCES = [f"127.0.1.{n}" for n in range(1, 11)]


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields["Rss"], fields["Pss"]


class MemoryWatch:
    """Samples a process's RSS and PSS every 0.2 s in a thread; keeps the first and the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first = _memory_kib(pid)
        self.peak = self.first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            rss, pss = _memory_kib(self.pid)
            self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))


def _metric(proxy: SipdispatchProxy, sample: str) -> float:
    return proxy.metric(sample + " ")


def test_an_invite_flood_from_one_source_leaves_the_other_callers_served(
    sipp_lab: SippLab, tmp_path: Path
) -> None:
    gw1 = sipp_lab.gateway("gw1", trace_messages=False)
    gw2 = sipp_lab.gateway("gw2", trace_messages=False)
    # A proxy facing untrusted callers: 200 new requests/s per source (the default, 2,500,
    # is sized for SBCs in front of the proxy, and is more than this machine's development
    # build serves while two sipp gateways, a caller and the flood share its two cores).
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [gw1, gw2], extra_args=["--source-rate", "200"]
    ).start()
    try:
        calls = 600  # 50 calls/s for 12 s: the flood's 10 s, and a second either side
        caller = sipp_lab.caller(
            proxy.hostport, rate=50, calls=calls, call_ms=200, trace_messages=False
        )
        with MemoryWatch(proxy.process.pid) as memory:
            caller.start()
            time.sleep(1.0)
            flood = subprocess.run(
                [sys.executable, str(FLOOD), FLOOD_SOURCE, proxy.ip, str(proxy.port), *FLOOD_RATE],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            result = caller.wait(timeout=120)
        sent = json.loads(flood.stdout)
        rate = sent["sent"] / sent["seconds"]
        refused = _metric(proxy, 'sipdispatch_requests_limited_total{reason="source-rate"}')
        print(
            f"\nflood: {sent['sent']} INVITEs in {sent['seconds']:.1f} s = {rate:,.0f}/s from "
            f"{FLOOD_SOURCE}; refused by source rate: {refused:.0f}\n"
            f"legitimate calls: {result.successful} of {result.created} succeeded\n"
            f"proxy memory: RSS {memory.first[0] / 1024:.1f} -> peak {memory.peak[0] / 1024:.1f}"
            f" MiB, PSS {memory.first[1] / 1024:.1f} -> peak {memory.peak[1] / 1024:.1f} MiB"
        )
        assert result.created == calls, result.summary()
        assert result.successful >= 0.999 * calls, result.summary()
        # The flood was refused before it cost a parse, apart from its 200/s; the few the
        # kernel dropped from the proxy's socket buffer never reached it to be counted.
        assert refused >= 0.8 * sent["sent"] - 200 * sent["seconds"]
        assert memory.peak[1] - memory.first[1] < 64 * 1024, "PSS grew by 64 MiB or more"
    finally:
        proxy.stop()


def _raise_descriptor_limit(wanted: int) -> None:
    """This process (and the proxy it starts, which inherits it) may open ``wanted`` files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {wanted} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _closed(sock: socket.socket) -> bool:
    """Whether the proxy closed its end (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _healthz(proxy: SipdispatchProxy) -> int:
    with urllib.request.urlopen(proxy.control_url + "/healthz", timeout=2) as answer:
        return int(answer.status)


def test_two_thousand_idle_tcp_connections_leave_calls_and_probes_served(
    sipp_lab: SippLab, tmp_path: Path
) -> None:
    _raise_descriptor_limit(8192)  # 2,100 client sockets here; the proxy's cap is then 2,048
    gateway = sipp_lab.gateway("gw1", trace_messages=False)
    idle_timeout = 15.0
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [gateway], extra_args=["--tcp-idle-timeout", str(idle_timeout)]
    ).start()
    idle: list[socket.socket] = []
    try:
        started = time.monotonic()
        for n in range(2000):  # 200 from each of 10 addresses: within the 256 per source
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            idle.append(sock)
            sock.bind((IDLE_SOURCES[n % len(IDLE_SOURCES)], 0))
            sock.connect((proxy.ip, proxy.port))
        opened = time.monotonic() - started
        assert opened < idle_timeout / 2, f"opening took {opened:.1f} s"
        deadline = time.monotonic() + 20  # a full accept queue retries SYNs
        while _metric(proxy, 'sipdispatch_tcp_connections{direction="inbound"}') < 2000:
            assert time.monotonic() < deadline, proxy.metrics()[-1500:]
            time.sleep(0.1)
        assert _healthz(proxy) == 200
        rss, pss = _memory_kib(proxy.process.pid)
        # Beyond the cap (2,048 with this descriptor limit), connections are closed at once.
        extra = []
        for n in range(100):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            extra.append(sock)
            sock.bind((f"127.0.2.{n + 1}", 0))
            sock.connect((proxy.ip, proxy.port))
        time.sleep(0.5)
        refused = sum(_closed(sock) for sock in extra)
        for sock in extra:
            sock.close()
        capacity = _metric(proxy, 'sipdispatch_tcp_connections_closed_total{reason="capacity"}')
        assert refused >= 48, (refused, proxy.metrics()[-1500:])
        assert capacity >= 48
        # Calls over UDP and over TCP while the connections sit idle.
        for transport in ("udp", "tcp"):
            caller = sipp_lab.caller(
                proxy.hostport, transport=transport, rate=20, calls=20, call_ms=100
            )
            result = caller.run()
            assert result.successful == 20, result.summary()
        assert _healthz(proxy) == 200
        if time.monotonic() - started < idle_timeout:
            assert not any(_closed(sock) for sock in idle), "closed before the idle timeout"
        # Then the idle ones are closed, within a timeout and a quarter of their last byte.
        deadline = started + opened + idle_timeout * 1.25 + 2.0
        while not all(_closed(sock) for sock in idle):
            assert time.monotonic() < deadline, "idle connections still open"
            time.sleep(0.2)
        closed_at = time.monotonic() - started
        assert _metric(proxy, 'sipdispatch_tcp_connections{direction="inbound"}') == 0
        assert _metric(proxy, 'sipdispatch_tcp_connections_closed_total{reason="idle"}') >= 2000
        assert _healthz(proxy) == 200
        print(
            f"\n2,000 idle connections opened in {opened:.1f} s; proxy RSS {rss / 1024:.1f} MiB, "
            f"PSS {pss / 1024:.1f} MiB with them; {refused} of 100 beyond the cap closed at "
            f"once; all idle ones closed {closed_at:.1f} s after the first was opened "
            f"(idle timeout {idle_timeout:g} s)"
        )
    finally:
        for sock in idle:
            sock.close()
        proxy.stop()
