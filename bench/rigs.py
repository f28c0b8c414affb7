"""The two balancers under test, each in front of its own pair of sipp gateways.

A *rig* is one balancer (sipdispatch or Kamailio) plus two sipp gateways on 127.0.0.2 and
127.0.0.3.  The two rigs use the same addresses on different ports, so the load one rig leaves
behind (retransmissions after an overloaded step) never reaches the other rig's gateways.
Every process is started through the test harness (``tests/sipphelpers.py``): its own session,
output in files, a bounded life, stopped by PID.

Both balancers get the same settings (`Settings`): round robin over set 1, record-routing,
OPTIONS probing every ``probe_interval`` seconds to every gateway with a one-failure threshold,
failover to the next gateway on 5xx or when a gateway sends nothing within ``answer_timeout``
(Kamailio's ``fr_timer``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (REPO_ROOT / "tests", REPO_ROOT / "tests" / "e2e"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from sipdispatchproc import hot_path_compiled  # noqa: E402

from sipphelpers import (  # noqa: E402
    HarnessError,
    KamailioProxy,
    ManagedProcess,
    SippGateway,
    SippLab,
    free_port,
    proxy_command,
    sip_options_ping,
)

__all__ = [
    "KamailioRig",
    "Rig",
    "Settings",
    "SipdispatchBuild",
    "SipdispatchRig",
    "cpu_by_pid",
    "machine_busy",
    "memory_of",
    "parse_cpus",
    "sipdispatch_builds",
    "spawning_on",
    "system_cpu",
    "udp_drops",
]

GATEWAY_IPS = ("127.0.0.2", "127.0.0.3")
# sipp's own default socket buffer is 64 KiB: at a few thousand calls/s its bursts overflow
# it and the drops would be blamed on the balancer.  The kernel caps it at net.core.rmem_max.
SIPP_BUFFER = ["-buff_size", str(4 << 20)]
# the caller's scenario: tests/sipp/scenarios/uac.xml, tolerating a 180 relayed after the 200
CALLER_SCENARIO = BENCH_DIR / "scenarios" / "uac.xml"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Settings:
    """What both balancers are configured with."""

    answer_timeout_s: float = 1.0  # Kamailio fr_timer, sipdispatch --answer-timeout
    probe_interval_s: int = 1  # ds_ping_interval / probing.interval
    probe_timeout_s: float = 1.0  # Kamailio: fr_timer (the same tm timer); sipdispatch: timeout
    kamailio_shm_mb: int = 1024  # completed transactions wait 5 s in shm: room for 4,000+ cps
    gateway_life_s: float = 1500.0  # hard bound on a sipp gateway's life
    #: the cores the balancers run on (``bench/run --balancer-cpus``), the first for a one-
    #: process balancer, the first two for two; empty: wherever the kernel puts them, on the
    #: cores the harness uses too
    balancer_cpus: tuple[int, ...] = ()


def parse_cpus(text: str) -> tuple[int, ...]:
    """A CPU list as ``taskset -c`` takes it (``0``, ``2,3``, ``2-5``), in order given."""
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list such as 0 or 2,3 or 2-5")
        for cpu in range(int(first), int(last or first) + 1):
            if cpu not in cpus:
                cpus.append(cpu)
    return tuple(cpus)


@contextmanager
def spawning_on(cpus: Collection[int]) -> Iterator[None]:
    """Processes started inside run on ``cpus``: the calling thread's CPU affinity, which a
    child inherits at fork (and its own children after it), is set for the while. Empty: no
    change."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _proc_files(process: ManagedProcess, name: str) -> dict[int, str]:
    """``/proc/<pid>/<name>`` of each live process of ``process``'s group, by pid (one that
    ended since the group was listed is left out)."""
    out = {}
    for pid in process.group_pids():
        try:
            out[pid] = Path(f"/proc/{pid}/{name}").read_text()
        except OSError:
            continue
    return out


def _user_system(stat: str) -> tuple[float, float]:
    """User and system CPU seconds from a ``/proc/<pid>/stat`` (fields after the command,
    which may hold spaces and parentheses)."""
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[11]) / _CLK_TCK, int(rest[12]) / _CLK_TCK


def cpu_by_pid(process: ManagedProcess) -> dict[int, float]:
    """CPU seconds so far of each live process of ``process``'s group."""
    return {pid: sum(_user_system(stat)) for pid, stat in _proc_files(process, "stat").items()}


def system_cpu(process: ManagedProcess) -> float:
    """CPU seconds so far spent in the kernel (system time: the socket calls) by the live
    processes of ``process``'s group."""
    return sum(_user_system(stat)[1] for stat in _proc_files(process, "stat").values())


def wakeups(process: ManagedProcess) -> int:
    """Times so far the live processes of ``process``'s group went to sleep and were woken
    (voluntary context switches: a wait for a socket or a timer that found nothing to do)."""
    total = 0
    for status in _proc_files(process, "status").values():
        found = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.MULTILINE)
        total += int(found.group(1)) if found else 0
    return total


def memory_of(process: ManagedProcess) -> dict[str, float]:
    """RSS and PSS (MiB) summed over the process group.  RSS counts memory shared between
    Kamailio's processes once per process; PSS divides shared pages among their users, so
    PSS is the fair figure for a multi-process server."""
    rss_kb = pss_kb = 0
    for pid in process.group_pids():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss_kb += int(line.split()[1])
        except OSError:
            continue
    return {
        "rss_mib": rss_kb / 1024,
        "pss_mib": pss_kb / 1024,
        "processes": len(process.group_pids()),
    }


def udp_drops() -> dict[tuple[str, int], int]:
    """Datagrams dropped so far (receive buffer full) per bound UDP socket, by (ip, port),
    from /proc/net/udp: tells whose socket overflowed during a step."""
    out: dict[tuple[str, int], int] = {}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 13:
            continue
        hex_ip, hex_port = fields[1].split(":")
        ip = ".".join(str(b) for b in reversed(bytes.fromhex(hex_ip)))
        key = (ip, int(hex_port, 16))
        out[key] = out.get(key, 0) + int(fields[12])
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat: busy fractions between
    two readings include every process on the machine, ours and anyone else's."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return float(total - idle), float(total)


#: the ladders measure what one process can serve, and their one caller is one source: its
#: per-source rate limit (default 2,500 new requests/s, meant to stop one host flooding the
#: proxy) is lifted there, as Kamailio's bench config has no pike. The feature-costs phase
#: runs the defaults (variants).
CAPACITY_ARGS = ("--source-rate", "0")


@dataclass(frozen=True)
class Variant:
    """sipdispatch with a feature switched on: YAML appended to the bench config, flags added
    to its command line. The bench measures each beside the plain proxy in the same run."""

    name: str
    config: str = ""
    args: tuple[str, ...] = ()
    #: the variant turns features off: their cost is the plain proxy's figure against it
    turns_off: bool = False
    #: the variant is the plain proxy again: its difference is the bench's own noise
    control: bool = False


class SipdispatchBalancer:
    """``sipdispatch-proxy`` from a YAML config of our own (so probing is configured the same
    way as Kamailio's), UDP and TCP on one free port of 127.0.0.1, control API on another."""

    def __init__(
        self,
        workdir: Path,
        gateways: list[SippGateway],
        settings: Settings,
        name: str,
        command: list[str] | None = None,
        *,
        variant: Variant | None = None,
    ) -> None:
        self.ip = "127.0.0.1"
        self.port = free_port(self.ip)
        self.control_port = free_port(self.ip)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / f"{name}.yaml"
        destinations = "".join(
            f"      - uri: sip:{gw.hostport}\n        duid: {gw.name}\n" for gw in gateways
        )
        self.config.write_text(
            "# written by bench/rigs.py: the settings of bench/kamailio/kamailio.cfg.tmpl\n"
            f"listen:\n  - udp:{self.ip}:{self.port}\n  - tcp:{self.ip}:{self.port}\n"
            "defaultSet: 1\n"
            "sets:\n  - id: 1\n    algorithm: round-robin\n    destinations:\n"
            f"{destinations}"
            "probing:\n"
            "  mode: all\n"
            f"  interval: {settings.probe_interval_s}\n"
            f"  timeout: {settings.probe_timeout_s}\n"
            "  jitter: 0\n"
            "  failureThreshold: 1\n"
            "  successThreshold: 1\n"
            "failover:\n"
            '  codes: ["5xx"]\n'
            "  onTimeout: true\n"
            "  maxAttempts: 2\n" + (variant.config if variant else "")
        )
        argv = [
            *(command or proxy_command()),
            "--config",
            str(self.config),
            "--algorithm",
            "round-robin",
            "--answer-timeout",
            f"{settings.answer_timeout_s:g}",
            "--control",
            f"{self.ip}:{self.control_port}",
            "--log-level",
            "warning",
            *(variant.args if variant else CAPACITY_ARGS),
        ]
        self.process = ManagedProcess(name, argv, workdir)

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"

    def start(self, ready_timeout: float = 20.0) -> SipdispatchBalancer:
        self.process.spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(
                    f"sipdispatch exited with {self.process.returncode} at start\n"
                    + self.process.output_tail(40)
                )
            if sip_options_ping(self.ip, self.port, timeout=0.3) == 200:
                return self
            time.sleep(0.05)
        self.process.stop()
        raise HarnessError(f"sipdispatch did not answer OPTIONS\n{self.process.output_tail(40)}")

    def api(self, path: str) -> Any:
        """GET a control API path, decoded from JSON."""
        url = f"http://{self.ip}:{self.control_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> int | None:
        return self.process.stop()


class Rig:
    """A balancer and its two gateways; ``restart()`` replaces all three by fresh processes
    on the same addresses (after an overloaded step, so no leftover state carries over)."""

    kind = "?"
    label = "?"

    def __init__(self, lab: SippLab, workdir: Path, settings: Settings, tag: str) -> None:
        self.lab = lab
        self.workdir = workdir
        self.settings = settings
        self.tag = tag
        self.ports = [free_port(ip) for ip in GATEWAY_IPS]
        self.generation = 0
        self.gateways: list[SippGateway] = []
        self.balancer_process: ManagedProcess | None = None
        self._balancer: SipdispatchBalancer | KamailioProxy | None = None

    # ---------------------------------------------------------------- gateways

    def new_gateway(self, index: int, *, trace_messages: bool = False) -> SippGateway:
        """Start gateway ``index`` (0 or 1) on its fixed address; a new log name each time."""
        self.generation += 1
        return self.lab.gateway(
            f"{self.tag}-gw{index + 1}-{self.generation}",
            ip=GATEWAY_IPS[index],
            port=self.ports[index],
            trace_messages=trace_messages,
            timeout_s=self.settings.gateway_life_s,
            extra_args=SIPP_BUFFER,
        )

    # ---------------------------------------------------------------- lifecycle

    def start(self, *, trace_gateways: bool = False) -> Rig:
        self.gateways = [self.new_gateway(i, trace_messages=trace_gateways) for i in range(2)]
        with spawning_on(self.cpus):
            self._start_balancer()
        return self

    def _start_balancer(self) -> None:
        raise NotImplementedError

    @property
    def processes(self) -> int:
        """Worker processes of the balancer (what its cores are counted in)."""
        return 1

    @property
    def cpus(self) -> tuple[int, ...]:
        """The cores the balancer runs on (empty: not set apart)."""
        return self.settings.balancer_cpus[: self.processes]

    def stop(self) -> None:
        if self.balancer_process is not None:
            self.balancer_process.stop()
        for gw in self.gateways:
            gw.stop()

    def restart(self, *, trace_gateways: bool = False) -> Rig:
        self.stop()
        time.sleep(0.3)
        return self.start(trace_gateways=trace_gateways)

    @property
    def hostport(self) -> str:
        assert self._balancer is not None
        return self._balancer.hostport

    @property
    def process(self) -> ManagedProcess:
        assert self.balancer_process is not None
        return self.balancer_process

    def cpu(self) -> dict[int, float]:
        return cpu_by_pid(self.process)

    def system_cpu(self) -> float:
        return system_cpu(self.process)

    def wakeups(self) -> int:
        return wakeups(self.process)

    def gateways_cpu(self) -> float:
        return sum(gw.process.cpu_seconds() for gw in self.gateways)

    def memory(self) -> dict[str, float]:
        return memory_of(self.process)

    def receive_buffer(self) -> int | None:
        """SO_RCVBUF (bytes, as the kernel reports it) of the balancer's UDP socket."""
        port = self.hostport.rpartition(":")[2]
        try:
            out = subprocess.run(
                ["ss", "-uanm", f"sport = :{port}"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r"rb(\d+)", out)
        return int(m.group(1)) if m else None

    def describe(self) -> Mapping[str, object]:
        return {"kind": self.kind, "label": self.label}


@dataclass(frozen=True)
class SipdispatchBuild:
    """One installed sipdispatch: the command that runs its proxy, and whether its hot path
    is compiled (mypyc, ``hack/build-native``) or pure Python (the development install)."""

    name: str  # "mypyc" or "pure Python"
    command: list[str]
    python: str

    @staticmethod
    def probe(command: list[str], python: str) -> SipdispatchBuild | None:
        compiled = hot_path_compiled(python)
        if compiled is None:
            return None
        return SipdispatchBuild("mypyc" if compiled else "pure Python", command, python)


def sipdispatch_builds(native_proxy: str | None) -> dict[str, SipdispatchBuild]:
    """The builds there are: ``python`` (this interpreter's install) and, when
    ``native_proxy`` (a ``sipdispatch-proxy`` of ``hack/build-native``) runs compiled code,
    ``native``."""
    out = {}
    plain = SipdispatchBuild.probe(proxy_command(), sys.executable)
    if plain is not None:
        out["python"] = plain
    if native_proxy:
        python = str(Path(native_proxy).parent / "python")
        native = SipdispatchBuild.probe([native_proxy], python)
        if native is not None and native.name == "mypyc":
            out["native"] = native
    return out


class SipdispatchRig(Rig):
    kind = "sipdispatch"

    def __init__(
        self,
        lab: SippLab,
        workdir: Path,
        settings: Settings,
        tag: str = "sd",
        build: SipdispatchBuild | None = None,
        *,
        variant: Variant | None = None,
    ) -> None:
        super().__init__(lab, workdir, settings, tag)
        self.build = build
        self.variant = variant
        self.label = "sipdispatch (1 worker" + (f", {build.name})" if build else ")")
        if variant is not None:
            self.label += f" {variant.name}"
        self._starts = 0

    @property
    def processes(self) -> int:
        args = self.variant.args if self.variant else ()
        return int(args[args.index("--workers") + 1]) if "--workers" in args else 1

    def _start_balancer(self) -> None:
        self._starts += 1
        balancer = SipdispatchBalancer(
            self.workdir,
            self.gateways,
            self.settings,
            f"{self.tag}-proxy-{self._starts}",
            command=self.build.command if self.build else None,
            variant=self.variant,
        )
        balancer.start()
        self._balancer = balancer
        self.balancer_process = balancer.process


class KamailioRig(Rig):
    kind = "kamailio"

    def __init__(
        self,
        lab: SippLab,
        workdir: Path,
        settings: Settings,
        tag: str = "kam",
        children: int = 1,
    ) -> None:
        super().__init__(lab, workdir, settings, tag)
        self.children = children
        self.label = f"Kamailio (children={children})"
        self._starts = 0

    @property
    def processes(self) -> int:
        return self.children

    def _start_balancer(self) -> None:
        self._starts += 1
        proxy = self.lab.kamailio(
            self.gateways,
            name=f"{self.tag}-kamailio-{self._starts}",
            children=self.children,
            ping_interval_s=self.settings.probe_interval_s,
            fr_timer_ms=round(self.settings.answer_timeout_s * 1000),
            shm_mb=self.settings.kamailio_shm_mb,
        )
        self._balancer = proxy
        self.balancer_process = proxy.process
