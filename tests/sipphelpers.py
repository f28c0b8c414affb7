"""Harness for end-to-end SIP tests and benchmarks with real sipp processes (and Kamailio).

What it gives:

* :class:`SippGateway` - a sipp UAS on ``ip:port`` (UDP or TCP) running one of the scenarios
  in ``tests/sipp/scenarios`` (``uas`` answers calls, ``uas_503`` / ``uas_486`` reject them;
  all answer OPTIONS with 200 at any time).  Every message it sends or receives is logged by
  sipp's ``-trace_shortmsg`` (one flushed line per message: time, direction, Call-ID, CSeq,
  first line), which :meth:`SippGateway.calls` turns into per-Call-ID records.
* :class:`SippCaller` - a sipp UAC placing ``calls`` calls at ``rate`` calls/s against an
  address (a gateway, Kamailio or sipdispatch), whose result (:class:`CallerResult`) comes
  from the final row of sipp's ``-trace_stat`` CSV plus the exit code.
* :class:`KamailioProxy` - Kamailio's dispatcher (``bench/kamailio/*.tmpl``) in front of a
  set of gateways: the comparison peer.
* :func:`routing_report` - which gateway answered each call, and whether the ACK and BYE of
  each call reached that gateway (and no other).
* :class:`SippLab` - owns all of the above for one test: unique loopback addresses, free
  ports, logs in one directory, everything stopped by PID at the end.

Every process is bounded (sipp ``-timeout``, ``-m``; Kamailio is stopped by the lab), runs
in its own session (so it and its children form a process group that is found by PID, never
by name), and writes stdout/stderr to files next to its logs.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Transport = Literal["udp", "tcp"]

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SCENARIO_DIR = TESTS_DIR / "sipp" / "scenarios"
KAMAILIO_TEMPLATE_DIR = REPO_ROOT / "bench" / "kamailio"

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# Call-IDs of the OPTIONS the harness itself sends (readiness checks, sip_options_ping)
HARNESS_PING_PREFIX = "harness-ping-"


class HarnessError(RuntimeError):
    """A process of the harness could not be started or did not behave."""


# --------------------------------------------------------------------------------------------
# binaries, ports, scenarios


def sipp_binary() -> str:
    """Path of sipp; a clear error if missing (``hack/bootstrap`` installs it)."""
    path = shutil.which("sipp")
    if path is None:
        raise HarnessError("sipp not found on PATH: run hack/bootstrap (Debian package sip-tester)")
    return path


def kamailio_binary() -> str | None:
    """Path of kamailio, or None: Kamailio is a comparison peer, not a test dependency."""
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)),
        None,
    )


def scenario_path(scenario: str | Path) -> Path:
    """``"uas"`` -> ``tests/sipp/scenarios/uas.xml``; a path is returned as it is."""
    if isinstance(scenario, Path):
        return scenario
    path = SCENARIO_DIR / (scenario if scenario.endswith(".xml") else f"{scenario}.xml")
    if not path.is_file():
        raise HarnessError(f"no sipp scenario {path}")
    return path


#: every port free_port() has given in this test run, never given twice
_HANDED_OUT: set[tuple[str, int]] = set()


def proxy_command() -> list[str]:
    """``sipdispatch-proxy`` of this environment, as a user runs it."""
    found = shutil.which("sipdispatch-proxy", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "sipdispatch.proxy"]


def control_page(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 15.0
) -> bytes:
    """The page at ``url`` of a proxy's control API once it answers; fails with the proxy's
    log if the process exits or the page does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url) as page:
                return bytes(page.read())
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(log.read_text()) from None
            time.sleep(0.1)


def free_port(ip: str = "127.0.0.1", *, netns: str | None = None) -> int:
    """A port that is free on ``ip`` for both UDP and TCP right now (ephemeral range).

    ``netns``: ``ip`` is an address inside that network namespace; the port is found there
    (by the same code, run with ``ip netns exec``)."""
    if netns is not None:
        return _free_port_in_netns(ip, netns)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ip, 0))
            port = int(udp.getsockname()[1])
            # Nothing holds a port between here and its use: the kernel may hand the same one
            # out again (a proxy once got one port for both its control API and SIP).
            if (ip, port) in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((ip, port))
                except OSError:
                    continue
                _HANDED_OUT.add((ip, port))
                return port
    raise HarnessError(f"no port free for both UDP and TCP on {ip}")


def _free_port_in_netns(ip: str, netns: str) -> int:
    code = (
        "import socket, sys\n"
        "for _ in range(50):\n"
        "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:\n"
        "        u.bind((sys.argv[1], 0))\n"
        "        port = u.getsockname()[1]\n"
        "        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:\n"
        "            try:\n"
        "                t.bind((sys.argv[1], port))\n"
        "            except OSError:\n"
        "                continue\n"
        "            print(port)\n"
        "            break\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code, ip],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise HarnessError(f"no free port on {ip} in network namespace {netns}: {done.stderr}")
    return int(done.stdout)


def source_address(ip: str) -> str:
    """The local address this host sends from to reach ``ip`` (a routing lookup: no packet
    is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, 9))
        return str(probe.getsockname()[0])


def sip_options_ping(
    ip: str,
    port: int,
    transport: Transport = "udp",
    timeout: float = 1.0,
    *,
    local_ip: str | None = "127.0.0.1",
) -> int | None:
    """Send one OPTIONS to ``ip:port``; the status code of the reply, or None if none came.

    Sent from ``local_ip`` (default 127.0.0.1); None: from the address the route to ``ip``
    leaves by (e.g. the root namespace's end of a test network's veth, for a gateway inside
    that namespace, which 127.0.0.1 cannot reach)."""
    family = socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        try:
            local = source_address(ip) if local_ip is None else local_ip
            sock.bind((local, 0))
            if transport == "tcp":
                sock.connect((ip, port))
            local_port = sock.getsockname()[1]
            call_id = f"{HARNESS_PING_PREFIX}{uuid.uuid4().hex}@{local}"
            msg = (
                f"OPTIONS sip:{ip}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/{transport.upper()} {local}:{local_port};rport;"
                f"branch=z9hG4bK{uuid.uuid4().hex[:16]}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:harness@{local}>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <sip:{ip}:{port}>\r\n"
                f"Call-ID: {call_id}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            if transport == "udp":
                sock.sendto(msg, (ip, port))
            else:
                sock.sendall(msg)
            deadline = time.monotonic() + timeout
            data = b""
            while time.monotonic() < deadline:
                chunk = sock.recv(65535)
                if not chunk:
                    return None  # TCP connection closed
                data += chunk
                # skip provisional replies; stop at the first final reply
                for m in re.finditer(rb"SIP/2\.0 (\d{3})", data):
                    code = int(m.group(1))
                    if code >= 200:
                        return code
        except OSError:
            return None
    return None


# --------------------------------------------------------------------------------------------
# processes


class ManagedProcess:
    """A child process in its own session, with output in files, stopped by PID.

    ``cpu_seconds()`` sums user+system time of every live process in its process group (for
    Kamailio: the main process and its workers), read from /proc, so a benchmark can sample
    it before and after a load window.  After the process ends, ``rusage_cpu_s`` holds the
    CPU time reported by wait4 for it and the children it reaped.
    """

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.rusage_cpu_s: float | None = None
        self.started_at: float | None = None  # time.monotonic()
        self.ended_at: float | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise HarnessError(f"{self.name} was not started")
        return self.proc.pid

    def spawn(self) -> None:
        if self.proc is not None:
            raise HarnessError(f"{self.name} already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / f"{self.name}.cmd").write_text(" ".join(self.argv) + "\n")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def running(self) -> bool:
        return self.proc is not None and self._reap(block=False) is None

    def _reap(self, block: bool) -> int | None:
        """waitpid the child ourselves (wait4, for its rusage); its exit code or None."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is not None:
            return proc.returncode
        try:
            pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            # already reaped elsewhere: let Popen find out
            return proc.poll()
        if pid == 0:
            return None
        self.ended_at = time.monotonic()
        self.rusage_cpu_s = usage.ru_utime + usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode

    def elapsed_s(self) -> float:
        """Seconds from start to exit (or to now, if still running)."""
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end by itself; its exit code (TimeoutError if it doesn't)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self._reap(block=False)
            if code is not None:
                return code
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} (pid {self.pid}) still running after {timeout}s")
            time.sleep(0.05)

    def group_pids(self) -> list[int]:
        """PIDs of live processes in this process's group (its session; itself included)."""
        if self.proc is None:
            return []
        pgid = self.proc.pid
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = _read_proc_stat(int(entry.name))
            if stat is not None and stat[2] == pgid and stat[1] != "Z":
                pids.append(int(entry.name))
        return pids

    def cpu_seconds(self) -> float:
        """User+system CPU seconds so far of the live processes of the group."""
        total = 0.0
        for pid in self.group_pids():
            stat = _read_proc_stat(pid)
            if stat is not None:
                total += (stat[3] + stat[4]) / _CLK_TCK
        return total

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; then SIGKILL any process left in its
        group (by PID).  Returns the exit code (negative: killed by that signal)."""
        if self.proc is None:
            return None
        if self._reap(block=False) is None:
            self.signal(signal.SIGTERM)
            try:
                self.wait(grace)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                self._reap(block=True)
        self._kill_leftovers()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL now (a gateway dying under load); reaped, leftovers killed by PID."""
        if self.proc is None:
            return None
        self.signal(signal.SIGKILL)
        self._reap(block=True)
        self._kill_leftovers()
        return self.proc.returncode

    def _kill_leftovers(self) -> None:
        for pid in self.group_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.group_pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def output_tail(self, lines: int = 20) -> str:
        parts = []
        for path in (self.stderr_path, self.stdout_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts)


def _read_proc_stat(pid: int) -> tuple[int, str, int, int, int] | None:
    """(pid, state, pgrp, utime, stime) from /proc/PID/stat, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    rest = raw[raw.rfind(")") + 2 :].split()
    return pid, rest[0], int(rest[2]), int(rest[11]), int(rest[12])


# --------------------------------------------------------------------------------------------
# sipp message logs (-trace_shortmsg)


@dataclass(frozen=True)
class ShortMessage:
    """One line of a sipp ``-trace_shortmsg`` log: a message sent (S) or received (R)."""

    time: float
    direction: Literal["R", "S"]
    call_id: str
    cseq: int
    cseq_method: str
    first_line: str

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        return self.first_line.split(" ", 1)[0] if self.is_request else None

    @property
    def status(self) -> int | None:
        """The response status code, or None for a request."""
        if self.is_request:
            return None
        return int(self.first_line.split(" ", 2)[1])


def parse_shortmsg_log(path: Path) -> list[ShortMessage]:
    """Parse a sipp ``-trace_shortmsg`` file (missing file: no messages).

    Line format (tab separated): date, time, epoch.usec, R|S, Call-ID, "CSeq:N METHOD",
    first line of the message.  A partly written last line is ignored.
    """
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 7 or fields[3] not in ("R", "S") or not fields[5].startswith("CSeq:"):
            continue
        cseq_num, _, cseq_method = fields[5][len("CSeq:") :].strip().partition(" ")
        try:
            out.append(
                ShortMessage(
                    time=float(fields[2]),
                    direction="R" if fields[3] == "R" else "S",
                    call_id=fields[4],
                    cseq=int(cseq_num),
                    cseq_method=cseq_method.strip(),
                    first_line=fields[6].strip(),
                )
            )
        except ValueError:
            continue
    return out


@dataclass
class GatewayCall:
    """What one gateway saw of one Call-ID (retransmissions included)."""

    call_id: str
    gateway: str
    requests: list[str] = field(default_factory=list)  # methods received, in order
    responses: list[tuple[int, str]] = field(default_factory=list)  # (status, CSeq method) sent

    @property
    def got_invite(self) -> bool:
        return "INVITE" in self.requests

    @property
    def answered(self) -> bool:
        """This gateway sent a 2xx to the INVITE (it answered the call)."""
        return any(200 <= s < 300 and m == "INVITE" for s, m in self.responses)

    @property
    def rejected_with(self) -> int | None:
        """The final non-2xx status this gateway sent to the INVITE, if any."""
        return next((s for s, m in self.responses if s >= 300 and m == "INVITE"), None)

    @property
    def got_ack(self) -> bool:
        return "ACK" in self.requests

    @property
    def got_bye(self) -> bool:
        return "BYE" in self.requests

    @property
    def bye_answered(self) -> bool:
        return any(200 <= s < 300 and m == "BYE" for s, m in self.responses)

    @property
    def options_only(self) -> bool:
        return bool(self.requests) and all(r == "OPTIONS" for r in self.requests)


def calls_from_messages(messages: Iterable[ShortMessage], gateway: str) -> dict[str, GatewayCall]:
    calls: dict[str, GatewayCall] = {}
    for msg in messages:
        call = calls.get(msg.call_id)
        if call is None:
            call = calls[msg.call_id] = GatewayCall(msg.call_id, gateway)
        if msg.direction == "R" and msg.is_request:
            call.requests.append(msg.method or "")
        elif msg.direction == "S" and not msg.is_request:
            call.responses.append((msg.status or 0, msg.cseq_method))
    return calls


def response_delays(
    messages: Iterable[ShortMessage], method: str = "INVITE", statuses: range = range(200, 300)
) -> dict[str, float]:
    """Per Call-ID, seconds from the first ``method`` request sent to the first response in
    ``statuses`` received for it (a caller's log; microsecond timestamps, unlike sipp's
    millisecond response-time statistics)."""
    sent: dict[str, float] = {}
    out: dict[str, float] = {}
    for m in messages:
        if m.direction == "S" and m.method == method:
            sent.setdefault(m.call_id, m.time)
        elif (
            m.direction == "R"
            and m.cseq_method == method
            and m.status in statuses
            and m.call_id in sent
            and m.call_id not in out
        ):
            out[m.call_id] = m.time - sent[m.call_id]
    return out


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; NaN if empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


# --------------------------------------------------------------------------------------------
# sipp processes


def _sipp_common_args(ip: str, port: int, transport: Transport, timeout_s: float) -> list[str]:
    return [
        "-i",
        ip,
        "-p",
        str(port),
        "-bind_local",  # listen on ip only, so gateways on 127.0.0.2/.3 can share a port
        "-t",
        "u1" if transport == "udp" else "t1",
        "-nostdin",
        "-timeout",
        f"{max(1, round(timeout_s))}s",  # hard bound on the process' life
    ]


class SippGateway:
    """A sipp UAS on ``ip:port`` standing in for an Asterisk gateway.

    ``scenario``: ``"uas"`` (answers), ``"uas_503"``, ``"uas_486"``, or a path.  All of them
    answer OPTIONS with 200, also while calls are in progress.  The gateway exits by itself
    after ``timeout_s`` at the latest.  ``trace_messages=False`` drops the per-message log
    (one write per SIP message) for benchmarks at thousands of calls/s; :meth:`calls` is
    then empty.

    ``netns``: run sipp inside that network namespace (``ip netns exec NETNS sipp ...``, which
    execs, so the PID stopped or killed is sipp's own); ``ip`` is then an address inside it
    (a test network of ``tests/netns.py``), the port is found free there, and the readiness
    OPTIONS goes from the root namespace's end of the route to it.
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        ip: str,
        *,
        port: int | None = None,
        transport: Transport = "udp",
        scenario: str | Path = "uas",
        timeout_s: float = 300.0,
        trace_messages: bool = True,
        extra_args: Sequence[str] = (),
        netns: str | None = None,
    ) -> None:
        self.name = name
        self.ip = ip
        self.netns = netns
        self.port = port if port is not None else free_port(ip, netns=netns)
        self.transport: Transport = transport
        self.scenario = scenario_path(scenario)
        self.workdir = workdir
        self.shortmsg_path = workdir / f"{name}.shortmsg.log"
        self.error_path = workdir / f"{name}.errors.log"
        argv = [
            sipp_binary(),
            "-sf",
            str(self.scenario),
            *_sipp_common_args(ip, self.port, transport, timeout_s),
            "-trace_err",
            "-error_file",
            str(self.error_path),
        ]
        if trace_messages:
            argv += ["-trace_shortmsg", "-shortmessage_file", str(self.shortmsg_path)]
        argv += list(extra_args)
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.process = ManagedProcess(name, argv, workdir)

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"

    def options_ping(self, timeout: float = 0.5) -> int | None:
        """One OPTIONS from the harness; the status of the answer, or None.  (From 127.0.0.1,
        or for a gateway in a network namespace from the address that reaches it.)"""
        local_ip = None if self.netns is not None else "127.0.0.1"
        return sip_options_ping(self.ip, self.port, self.transport, timeout, local_ip=local_ip)

    @property
    def uri(self) -> str:
        """SIP URI to route to this gateway, e.g. ``sip:127.0.0.2:41234;transport=tcp``."""
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.ip}:{self.port}{suffix}"

    def start(self, ready_timeout: float = 10.0) -> SippGateway:
        """Start sipp and return once it answers an OPTIONS (so it is really listening)."""
        self.process.spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(
                    f"gateway {self.name} exited with {self.process.returncode} at start\n"
                    + self.process.output_tail()
                )
            if self.options_ping(timeout=0.5) == 200:
                return self
            time.sleep(0.05)
        self.process.stop()
        raise HarnessError(
            f"gateway {self.name} not answering OPTIONS on {self.hostport}/{self.transport}\n"
            + self.process.output_tail()
        )

    def stop(self) -> int | None:
        return self.process.stop()

    def kill(self) -> int | None:
        """SIGKILL: the gateway dies at once (its message log is complete up to then)."""
        return self.process.kill()

    def messages(self) -> list[ShortMessage]:
        return parse_shortmsg_log(self.shortmsg_path)

    def calls(self) -> dict[str, GatewayCall]:
        """Per Call-ID record of what this gateway received and sent (OPTIONS included)."""
        return calls_from_messages(self.messages(), self.name)

    def options_answered(self, *, include_harness: bool = False) -> int:
        """OPTIONS this gateway answered with 200; by default not counting the harness's own
        readiness pings (Call-ID ``ping-...``), i.e. the probes of the proxy under test."""
        return sum(
            1
            for m in self.messages()
            if m.direction == "S"
            and m.cseq_method == "OPTIONS"
            and m.status == 200
            and (include_harness or not m.call_id.startswith(HARNESS_PING_PREFIX))
        )


# sipp -trace_stat columns read into CallerResult
_FAILURE_COLUMNS = (
    "FailedCannotSendMessage",
    "FailedMaxUDPRetrans",
    "FailedTcpConnect",
    "FailedTcpClosed",
    "FailedUnexpectedMessage",
    "FailedCallRejected",
    "FailedCmdNotSent",
    "FailedRegexpDoesntMatch",
    "FailedRegexpShouldntMatch",
    "FailedRegexpHdrNotFound",
    "FailedOutboundCongestion",
    "FailedTimeoutOnRecv",
    "FailedTimeoutOnSend",
)


def _sipp_duration_ms(value: str) -> float:
    """sipp's "HH:MM:SS:uuuuuu" (or "HH:MM:SS") to milliseconds."""
    parts = value.strip().split(":")
    if len(parts) < 3:
        return 0.0
    seconds = int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])
    micros = int(parts[3]) if len(parts) > 3 else 0
    return seconds * 1000.0 + micros / 1000.0


def parse_sipp_stat_csv(path: Path) -> dict[str, str]:
    """The last row of a sipp ``-trace_stat`` CSV (sipp writes one at exit) as a dict."""
    if not path.exists():
        return {}
    with path.open(newline="", errors="replace") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    header = rows[0]
    last = next((r for r in reversed(rows[1:]) if len(r) >= len(header) - 1), None)
    if last is None:
        return {}
    return dict(zip(header, last, strict=False))


@dataclass(frozen=True)
class CallerResult:
    """Outcome of one sipp caller run."""

    returncode: int
    created: int
    successful: int
    failed: int
    retransmissions: int
    out_of_call_msgs: int
    dead_call_msgs: int
    failures: dict[str, int]  # non-zero Failed* counters
    answer_ms_mean: float  # INVITE -> 200, mean over the run (sipp has ms resolution)
    trying_ms_mean: float  # INVITE -> 100
    elapsed_s: float  # wall clock, process start to exit
    cpu_s: float | None  # CPU time of the sipp caller process
    stats: dict[str, str]  # the whole final -trace_stat row
    workdir: Path

    def summary(self) -> str:
        fails = ", ".join(f"{k}={v}" for k, v in self.failures.items()) or "none"
        return (
            f"sipp caller rc={self.returncode}: created={self.created} "
            f"successful={self.successful} failed={self.failed} ({fails}) "
            f"retrans={self.retransmissions} out-of-call={self.out_of_call_msgs} "
            f"dead-call={self.dead_call_msgs} answer={self.answer_ms_mean:.2f}ms "
            f"elapsed={self.elapsed_s:.1f}s cpu={self.cpu_s}s logs in {self.workdir}"
        )

    @staticmethod
    def from_stats(
        returncode: int,
        stats: Mapping[str, str],
        *,
        elapsed_s: float,
        cpu_s: float | None,
        workdir: Path,
    ) -> CallerResult:
        def num(col: str) -> int:
            try:
                return int(stats.get(col, "0") or 0)
            except ValueError:
                return 0

        failures = {c: num(f"{c}(C)") for c in _FAILURE_COLUMNS if num(f"{c}(C)")}
        return CallerResult(
            returncode=returncode,
            created=num("TotalCallCreated"),
            successful=num("SuccessfulCall(C)"),
            failed=num("FailedCall(C)"),
            retransmissions=num("Retransmissions(C)"),
            out_of_call_msgs=num("OutOfCallMsgs(C)"),
            dead_call_msgs=num("DeadCallMsgs(C)"),
            failures=failures,
            answer_ms_mean=_sipp_duration_ms(stats.get("ResponseTimeanswer(C)", "")),
            trying_ms_mean=_sipp_duration_ms(stats.get("ResponseTimetrying(C)", "")),
            elapsed_s=elapsed_s,
            cpu_s=cpu_s,
            stats=dict(stats),
            workdir=workdir,
        )


class SippCaller:
    """A sipp UAC placing ``calls`` calls at ``rate`` calls/s to ``target`` ("ip:port").

    Each call: INVITE, 100/180 optional, 200, ACK, pause ``call_ms``, BYE, 200 (scenario
    ``uac``).  A call fails if a reply does not come within ``recv_timeout_ms``; the whole
    process is bounded by ``timeout_s`` (default: the run's length plus a margin), after
    which sipp exits with an error.
    """

    def __init__(
        self,
        workdir: Path,
        target: str,
        *,
        name: str = "caller",
        transport: Transport = "udp",
        rate: float = 10.0,
        calls: int = 10,
        call_ms: int = 500,
        local_ip: str = "127.0.0.1",
        port: int | None = None,
        scenario: str | Path = "uac",
        max_concurrent: int | None = None,
        recv_timeout_ms: int = 10_000,
        timeout_s: float | None = None,
        trace_messages: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.target = target
        self.transport: Transport = transport
        self.rate = rate
        self.calls = calls
        self.local_ip = local_ip
        self.port = port if port is not None else free_port(local_ip)
        self.workdir = workdir
        self.stat_path = workdir / f"{name}.stat.csv"
        self.shortmsg_path = workdir / f"{name}.shortmsg.log"
        self.error_path = workdir / f"{name}.errors.log"
        self.screen_path = workdir / f"{name}.screen.log"
        if timeout_s is None:
            timeout_s = calls / rate + call_ms / 1000 + recv_timeout_ms / 1000 + 30
        self.timeout_s = timeout_s
        argv = [
            sipp_binary(),
            target,
            "-sf",
            str(scenario_path(scenario)),
            *_sipp_common_args(local_ip, self.port, transport, timeout_s),
            "-timeout_error",
            "-m",
            str(calls),
            "-r",
            f"{rate:g}",
            "-rp",
            "1000",
            "-d",
            str(call_ms),
            "-recv_timeout",
            str(recv_timeout_ms),
            "-trace_stat",
            "-stf",
            str(self.stat_path),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(self.error_path),
            "-trace_screen",
            "-screen_file",
            str(self.screen_path),
        ]
        if max_concurrent is not None:
            argv += ["-l", str(max_concurrent)]
        if trace_messages:
            argv += ["-trace_shortmsg", "-shortmessage_file", str(self.shortmsg_path)]
        argv += list(extra_args)
        self.process = ManagedProcess(name, argv, workdir)

    def start(self) -> SippCaller:
        self.process.spawn()
        return self

    def wait(self, timeout: float | None = None) -> CallerResult:
        """Wait for sipp to finish (it does by itself) and read its result."""
        limit = self.timeout_s + 15 if timeout is None else timeout
        try:
            code = self.process.wait(limit)
        except TimeoutError:
            self.process.stop()
            raise
        return CallerResult.from_stats(
            code,
            parse_sipp_stat_csv(self.stat_path),
            elapsed_s=self.process.elapsed_s(),
            cpu_s=self.process.rusage_cpu_s,
            workdir=self.workdir,
        )

    def run(self) -> CallerResult:
        return self.start().wait()

    def stop(self) -> int | None:
        return self.process.stop()

    def messages(self) -> list[ShortMessage]:
        return parse_shortmsg_log(self.shortmsg_path)

    def call_ids(self) -> set[str]:
        """Call-IDs of the INVITEs this caller sent (needs trace_messages)."""
        return {m.call_id for m in self.messages() if m.direction == "S" and m.method == "INVITE"}

    def answer_delays(self) -> dict[str, float]:
        """Per Call-ID, seconds from INVITE sent to 2xx received (needs trace_messages)."""
        return response_delays(self.messages(), "INVITE", range(200, 300))

    def trying_delays(self) -> dict[str, float]:
        """Per Call-ID, seconds from INVITE sent to 100 received (needs trace_messages)."""
        return response_delays(self.messages(), "INVITE", range(100, 101))

    def completed_call_ids(self) -> set[str]:
        """Call-IDs whose BYE got a 2xx (needs trace_messages)."""
        return {
            m.call_id
            for m in self.messages()
            if m.direction == "R" and m.cseq_method == "BYE" and 200 <= (m.status or 0) < 300
        }


# --------------------------------------------------------------------------------------------
# routing checks


@dataclass
class RoutingReport:
    """Where each call went, across a set of gateways.

    ``answered_by``: Call-ID -> name of the gateway that sent the 2xx to its INVITE.
    Problems found (each a list of Call-IDs or tuples):
      ``answered_twice`` - more than one gateway answered the same Call-ID
      ``bye_elsewhere`` - (call-id, answering gateway, gateway that got a BYE) with the
                          BYE at a gateway that did not answer the call
      ``bye_missing``   - the answering gateway never received the BYE
      ``ack_missing``   - the answering gateway never received the ACK
      ``not_answered``  - Call-IDs the caller sent that no gateway answered
    """

    answered_by: dict[str, str]
    per_gateway: dict[str, int]
    answered_twice: list[str]
    bye_elsewhere: list[tuple[str, str, str]]
    bye_missing: list[str]
    ack_missing: list[str]
    not_answered: list[str]
    rejected: dict[str, dict[int, int]]  # gateway -> status -> count of INVITEs rejected

    def problems(self, *, require_ack: bool = True) -> list[str]:
        def head(items: Sequence[object]) -> str:
            return ", ".join(map(str, items[:5])) + (" ..." if len(items) > 5 else "")

        out = []
        if self.answered_twice:
            out.append(
                f"{len(self.answered_twice)} calls answered twice: {head(self.answered_twice)}"
            )
        if self.bye_elsewhere:
            out.append(
                f"{len(self.bye_elsewhere)} BYEs reached a gateway that did not answer the call "
                f"(call, answered by, BYE at): {head(self.bye_elsewhere)}"
            )
        if self.bye_missing:
            out.append(
                f"{len(self.bye_missing)} answered calls whose BYE never reached the answering "
                f"gateway: {head(self.bye_missing)}"
            )
        if require_ack and self.ack_missing:
            out.append(
                f"{len(self.ack_missing)} answered calls whose ACK never reached the answering "
                f"gateway: {head(self.ack_missing)}"
            )
        if self.not_answered:
            out.append(
                f"{len(self.not_answered)} calls answered nowhere: {head(self.not_answered)}"
            )
        return out


def routing_report(
    gateways: Iterable[SippGateway] | Mapping[str, Mapping[str, GatewayCall]],
    caller_call_ids: Iterable[str] | None = None,
) -> RoutingReport:
    """Check, per Call-ID, which gateway answered and where its ACK and BYE went.

    ``gateways``: the gateways (their logs are read now) or, for tests of this function,
    gateway name -> :meth:`SippGateway.calls` output.  ``caller_call_ids``: if given, every
    one of them must have been answered somewhere.
    """
    if isinstance(gateways, Mapping):
        per_gw = {name: dict(calls) for name, calls in gateways.items()}
    else:
        per_gw = {gw.name: gw.calls() for gw in gateways}

    answerers: dict[str, list[str]] = {}
    byes_at: dict[str, list[str]] = {}
    rejected: dict[str, dict[int, int]] = {}
    for name, calls in per_gw.items():
        rej: Counter[int] = Counter()
        for call in calls.values():
            if call.answered:
                answerers.setdefault(call.call_id, []).append(name)
            if call.got_bye:
                byes_at.setdefault(call.call_id, []).append(name)
            status = call.rejected_with
            if status is not None:
                rej[status] += 1
        rejected[name] = dict(rej)

    answered_by = {cid: names[0] for cid, names in answerers.items()}
    per_gateway = dict.fromkeys(per_gw, 0)
    for name in answered_by.values():
        per_gateway[name] += 1
    answered_twice = sorted(cid for cid, names in answerers.items() if len(names) > 1)
    bye_elsewhere = sorted(
        (cid, answered_by.get(cid, "-"), at)
        for cid, names in byes_at.items()
        for at in names
        if at not in answerers.get(cid, [])
    )
    bye_missing = sorted(cid for cid, name in answered_by.items() if not per_gw[name][cid].got_bye)
    ack_missing = sorted(cid for cid, name in answered_by.items() if not per_gw[name][cid].got_ack)
    not_answered = (
        sorted(set(caller_call_ids) - answered_by.keys()) if caller_call_ids is not None else []
    )
    return RoutingReport(
        answered_by=answered_by,
        per_gateway=per_gateway,
        answered_twice=answered_twice,
        bye_elsewhere=bye_elsewhere,
        bye_missing=bye_missing,
        ack_missing=ack_missing,
        not_answered=not_answered,
        rejected=rejected,
    )


def split_problems(counts: Mapping[str, int], tolerance: float = 0.10) -> list[str]:
    """Whether calls are split evenly: each share within ``tolerance`` (relative) of the
    mean.  Returns a description of each gateway outside the band (empty: even)."""
    if not counts:
        return ["no gateways"]
    total = sum(counts.values())
    mean = total / len(counts)
    return [
        f"{name} got {n} of {total} calls, expected {mean:.0f} +/- {tolerance:.0%}"
        for name, n in sorted(counts.items())
        if abs(n - mean) > tolerance * mean
    ]


def dispatch_problems(
    result: CallerResult,
    report: RoutingReport,
    *,
    calls: int,
    even_split: bool = True,
    tolerance: float = 0.10,
    require_ack: bool = True,
) -> list[str]:
    """Everything wrong with a run of ``calls`` calls through a load balancer: the caller
    failed or lost calls, a call was answered nowhere or twice, an ACK or BYE missed the
    gateway that answered, or (``even_split``) the gateways' shares are uneven.  Empty: OK.
    ``result.summary()`` is included when anything is wrong."""
    out = []
    if result.returncode != 0:
        out.append(f"sipp caller exited with {result.returncode}")
    if result.failed:
        out.append(f"{result.failed} failed calls")
    if result.successful != calls:
        out.append(f"{result.successful} successful calls of {calls}")
    out += report.problems(require_ack=require_ack)
    if even_split:
        out += split_problems(report.per_gateway, tolerance)
    if out:
        out.append(result.summary())
        out.append(f"answered per gateway: {report.per_gateway}, rejected: {report.rejected}")
    return out


# --------------------------------------------------------------------------------------------
# Kamailio


def render_template(path: Path, values: Mapping[str, object]) -> str:
    """Fill ``{{NAME}}`` fields; every field must be given and every value used."""
    text = path.read_text()
    names = set(re.findall(r"\{\{([A-Z_]+)\}\}", text))
    missing = names - values.keys()
    unknown = values.keys() - names
    if missing or unknown:
        raise HarnessError(f"{path}: missing fields {sorted(missing)}, unknown {sorted(unknown)}")
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: str(values[m.group(1)]), text)


class KamailioProxy:
    """Kamailio 5.x dispatcher (round robin, record-routing, stateful, OPTIONS probing,
    failover on 5xx/timeout) in front of ``gateways``, listening on ``listen_ip:port`` over
    UDP and TCP.  Rendered from ``bench/kamailio/*.tmpl`` into ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        gateways: Sequence[SippGateway],
        *,
        name: str = "kamailio",
        listen_ip: str = "127.0.0.1",
        port: int | None = None,
        children: int = 1,
        tcp_children: int = 1,
        ping_interval_s: int = 1,
        fr_timer_ms: int = 2000,
        fr_inv_timer_ms: int = 40000,
        debug: int = 1,
        shm_mb: int = 128,
        pkg_mb: int = 8,
    ) -> None:
        binary = kamailio_binary()
        if binary is None:
            raise HarnessError("kamailio not installed (Debian package kamailio)")
        self.name = name
        self.listen_ip = listen_ip
        self.port = port if port is not None else free_port(listen_ip)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.cfg_path = workdir / f"{name}.cfg"
        self.list_path = workdir / f"{name}.dispatcher.list"
        rundir = workdir / f"{name}.run"
        rundir.mkdir(exist_ok=True)
        destinations = "\n".join(f"1 {gw.uri} 8 0 duid={gw.name}" for gw in gateways)
        self.list_path.write_text(
            render_template(
                KAMAILIO_TEMPLATE_DIR / "dispatcher.list.tmpl", {"DESTINATIONS": destinations}
            )
        )
        self.cfg_path.write_text(
            render_template(
                KAMAILIO_TEMPLATE_DIR / "kamailio.cfg.tmpl",
                {
                    "LISTEN_IP": listen_ip,
                    "PORT": self.port,
                    "CHILDREN": children,
                    "TCP_CHILDREN": tcp_children,
                    "DEBUG": debug,
                    "DISPATCHER_LIST": self.list_path,
                    "PING_INTERVAL": ping_interval_s,
                    "FR_TIMER_MS": fr_timer_ms,
                    "FR_INV_TIMER_MS": fr_inv_timer_ms,
                },
            )
        )
        argv = [
            binary,
            "-f",
            str(self.cfg_path),
            "-P",
            str(workdir / f"{name}.pid"),
            "-Y",
            str(rundir),
            "-DD",  # stay in the foreground: the PID we started is the main process
            "-E",  # log to stderr (our file)
            "-m",
            str(shm_mb),
            "-M",
            str(pkg_mb),
        ]
        self.process = ManagedProcess(name, argv, workdir)

    @property
    def hostport(self) -> str:
        return f"{self.listen_ip}:{self.port}"

    def start(self, ready_timeout: float = 15.0) -> KamailioProxy:
        """Start Kamailio and return once it answers OPTIONS over UDP and TCP."""
        self.process.spawn()
        deadline = time.monotonic() + ready_timeout
        ready: set[Transport] = set()
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(
                    f"kamailio exited with {self.process.returncode} at start\n"
                    + self.process.output_tail(40)
                )
            for transport in ("udp", "tcp"):
                if transport not in ready and (
                    sip_options_ping(self.listen_ip, self.port, transport, 0.5) == 200
                ):
                    ready.add(transport)
            if len(ready) == 2:
                return self
            time.sleep(0.1)
        self.process.stop()
        raise HarnessError(
            f"kamailio not answering OPTIONS on {self.hostport}\n" + self.process.output_tail(40)
        )

    def stop(self) -> int | None:
        return self.process.stop()

    def cpu_seconds(self) -> float:
        """CPU seconds so far of all Kamailio processes (main, workers, timers)."""
        return self.process.cpu_seconds()


# --------------------------------------------------------------------------------------------
# the lab: owns everything of one test


class SippLab:
    """Creates gateways, callers and proxies for one test and stops them all at the end.

    Gateways get their own loopback addresses (127.0.0.2, 127.0.0.3, ... in creation order)
    and, unless given, a free port; logs and process output go to ``workdir``.  A gateway
    given ``netns`` (and an ``ip`` inside that network namespace) runs inside it.
    """

    def __init__(self, workdir: Path, first_gateway_host: int = 2) -> None:
        self.workdir = workdir
        self._next_host = first_gateway_host
        self._owned: list[SippGateway | SippCaller | KamailioProxy] = []
        self.gateways: list[SippGateway] = []

    def next_gateway_ip(self) -> str:
        ip = f"127.0.0.{self._next_host}"
        self._next_host += 1
        return ip

    def gateway(
        self,
        name: str | None = None,
        *,
        ip: str | None = None,
        port: int | None = None,
        transport: Transport = "udp",
        scenario: str | Path = "uas",
        start: bool = True,
        netns: str | None = None,
        **kwargs: Any,
    ) -> SippGateway:
        name = name or f"gw{len(self.gateways) + 1}"
        if netns is not None and ip is None:
            raise HarnessError(f"gateway {name}: give the address inside network namespace {netns}")
        gw = SippGateway(
            self.workdir,
            name,
            ip or self.next_gateway_ip(),
            port=port,
            transport=transport,
            scenario=scenario,
            netns=netns,
            **kwargs,
        )
        self._owned.append(gw)
        self.gateways.append(gw)
        return gw.start() if start else gw

    def caller(self, target: str, *, name: str | None = None, **kwargs: Any) -> SippCaller:
        """A caller (not started: use ``.run()`` or ``.start()``/``.wait()``)."""
        if name is None:
            name = f"caller{sum(isinstance(o, SippCaller) for o in self._owned) + 1}"
        caller = SippCaller(self.workdir, target, name=name, **kwargs)
        self._owned.append(caller)
        return caller

    def kamailio(
        self, gateways: Sequence[SippGateway] | None = None, *, start: bool = True, **kwargs: Any
    ) -> KamailioProxy:
        chosen = list(self.gateways if gateways is None else gateways)
        proxy = KamailioProxy(self.workdir, chosen, **kwargs)
        self._owned.append(proxy)
        return proxy.start() if start else proxy

    def close(self) -> list[str]:
        """Stop everything (callers and proxies first, then gateways), by PID.  Returns the
        names of processes that had to be stopped although they should have ended."""
        still_running = []
        order = sorted(self._owned, key=lambda o: isinstance(o, SippGateway))
        for owned in order:
            proc = owned.process
            if isinstance(owned, SippCaller) and proc.running():
                still_running.append(proc.name)
            proc.stop()
        return still_running
