"""Real Asterisk instances for end-to-end tests (built by ``hack/asterisk build``).

Each box runs on its own loopback address with a configuration generated here: PJSIP UDP and
TCP transports on one port, the proxy identified by its address (its OPTIONS probes get 200,
calls from it land in context ``from-proxy``), callers and queue agents authenticated by digest,
a dialplan, queues, CDR to CSV and a queue log. A box is checked through its own files and its
own CLI (``asterisk -rx`` on its control socket) and stopped by PID.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipphelpers import REPO_ROOT, HarnessError, ManagedProcess, free_port


def asterisk_prefix() -> Path:
    """The install prefix of the cached Asterisk build (``hack/asterisk prefix`` builds it once;
    minutes when cold, nothing afterwards). Skips the test when there is no source to build
    from: Asterisk is not in Debian's packages."""
    script = str(REPO_ROOT / "hack" / "asterisk")
    if subprocess.run([script, "has-source"], capture_output=True, check=False).returncode:
        pytest.skip("no Asterisk source found (see hack/asterisk; SIPDISPATCH_ASTERISK_SOURCE)")
    done = subprocess.run(
        [script, "prefix"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise HarnessError(f"hack/asterisk prefix failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Account:
    """A PJSIP endpoint that authenticates with digest (a caller, or a queue agent that
    registers)."""

    name: str
    password: str = "s3cret-pw"


@dataclass(frozen=True)
class CdrRow:
    """One line of Master.csv (cdr_csv with the unique id and user field)."""

    src: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    disposition: str
    uniqueid: str
    userfield: str  # the SIP Call-ID of the call that reached the box (set by the dialplan)


@dataclass(frozen=True)
class QueueEvent:
    """One line of queue_log: time|callid|queue|agent|event|data..."""

    callid: str  # the caller channel's unique id (as in the CDR), not the SIP Call-ID
    queue: str
    agent: str
    event: str
    data: tuple[str, ...]


DIALPLAN = """\
[general]
static=yes
writeprotect=yes

[inbound]
; Every call records its SIP Call-ID in the CDR, so a test can tell which box took which call.
exten => _[a-z].,1,Set(CDR(userfield)=${{CHANNEL(pjsip,call-id)}})
 same => n,Queue(${{EXTEN}},r,,,20)
 same => n,Hangup()
exten => 7000,1,Set(CDR(userfield)=${{CHANNEL(pjsip,call-id)}})
 same => n,Answer()
 same => n,Wait(2)
 same => n,Hangup()                    ; Asterisk hangs up: the BYE comes from its side
exten => _X.,1,Set(CDR(userfield)=${{CHANNEL(pjsip,call-id)}})
 same => n,Answer()
 same => n,Wait(60)                    ; the caller hangs up
 same => n,Hangup()

[from-proxy]
; A call from the proxy that no caller endpoint claims: another Asterisk's call hairpinned back,
; or a carrier's. Answered and recorded, so a test sees it in the CDR.
exten => _[0-9a-z+].,1,Set(CDR(userfield)=${{CHANNEL(pjsip,call-id)}})
 same => n,Answer()
 same => n,Wait(5)
 same => n,Hangup()

[outbound]
exten => _[0-9+].,1,Dial(PJSIP/${{EXTEN}}@proxy,10)
"""


class AsteriskBox:
    """One Asterisk on ``ip``: SIP on UDP and TCP ``ip:port``."""

    def __init__(
        self,
        prefix: Path,
        workdir: Path,
        name: str,
        ip: str,
        *,
        callers: Sequence[Account] = (),
        queues: dict[str, Sequence[Account]] | None = None,
        rtp_base: int = 30000,
        sip_debug: bool = False,
    ) -> None:
        """``sip_debug``: log every SIP message (pjsip.conf ``[global] debug=yes``), for
        :meth:`sip_messages`."""
        self.prefix = prefix
        self.name = name
        self.ip = ip
        self.port = free_port(ip)
        self.workdir = workdir / name
        self.callers = list(callers)
        self.queues = dict(queues or {})
        self.rtp_base = rtp_base
        self.sip_debug = sip_debug
        # The control socket's path must stay under 108 bytes: a short directory of its own.
        self.rundir = Path(tempfile.mkdtemp(prefix=f"ast-{name}-", dir="/tmp"))
        self.process: ManagedProcess | None = None
        self.proxy_hostport = ""

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.hostport}"

    @property
    def conf(self) -> Path:
        return self.workdir / "etc" / "asterisk.conf"

    @property
    def logdir(self) -> Path:
        return self.workdir / "log"

    # ---------------------------------------------------------------------------- config

    def _accounts(self) -> list[Account]:
        seen = {a.name: a for a in self.callers}
        for agents in self.queues.values():
            seen.update({a.name: a for a in agents})
        return list(seen.values())

    def _pjsip_conf(self) -> str:
        proxy_ip = self.proxy_hostport.rsplit(":", 1)[0]
        parts = [
            f"""\
[global]
type=global
; A caller is identified by its From user first; anything else from the proxy's address (its
; probes, calls no caller claims) is the proxy.
endpoint_identifier_order=username,ip
user_agent=Asterisk {self.name}
debug={"yes" if self.sip_debug else "no"}

[transport-udp]
type=transport
protocol=udp
bind={self.hostport}

[transport-tcp]
type=transport
protocol=tcp
bind={self.hostport}

[proxy]
type=endpoint
context=from-proxy
disallow=all
allow=ulaw,alaw
aors=proxy
direct_media=no
rtp_symmetric=yes

[proxy]
type=aor
contact=sip:{self.proxy_hostport}

[proxy]
type=identify
endpoint=proxy
match={proxy_ip}
"""
        ]
        parts.extend(
            f"""
[{account.name}]
type=endpoint
context=inbound
disallow=all
allow=ulaw,alaw
auth={account.name}-auth
aors={account.name}
direct_media=no
rtp_symmetric=yes
force_rport=yes
rewrite_contact=yes

[{account.name}-auth]
type=auth
auth_type=userpass
username={account.name}
password={account.password}

[{account.name}]
type=aor
max_contacts=1
remove_existing=yes
"""
            for account in self._accounts()
        )
        return "".join(parts)

    def _queues_conf(self) -> str:
        parts = ["[general]\npersistentmembers=no\n"]
        for queue, agents in self.queues.items():
            parts.append(f"\n[{queue}]\nstrategy=rrmemory\ntimeout=5\nretry=1\nringinuse=no\n")
            parts.extend(f"member => PJSIP/{agent.name}\n" for agent in agents)
        return "".join(parts)

    def _write_config(self) -> None:
        etc = self.workdir / "etc"
        for sub in ("etc", "lib", "spool", "log", "log/cdr-csv"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        data = self.prefix / "var" / "lib" / "asterisk"
        files = {
            "asterisk.conf": f"""\
[directories]
astetcdir => {etc}
astmoddir => {self.prefix}/lib/asterisk/modules
astvarlibdir => {self.workdir}/lib
astdbdir => {self.workdir}/lib
astkeydir => {self.workdir}/lib
astdatadir => {data}
astagidir => {data}/agi-bin
astspooldir => {self.workdir}/spool
astrundir => {self.rundir}
astlogdir => {self.logdir}
astsbindir => {self.prefix}/sbin

[options]
systemname = {self.name}
verbose = 3
""",
            "modules.conf": """\
[modules]
autoload = yes
; not used by the tests, and noisy without a configuration
noload => res_stasis_test.so
noload => res_pjsip_phoneprov_provider.so
noload => res_phoneprov.so
noload => res_hep.so
noload => res_hep_pjsip.so
noload => res_hep_rtcp.so
noload => res_smdi.so
noload => res_config_ldap.so
noload => res_prometheus.so
""",
            "logger.conf": """\
[general]
queue_log = yes
[logfiles]
messages.log => notice,warning,error,verbose(3)
""",
            "cdr.conf": """\
[general]
enable = yes
[csv]
usegmtime = yes
loguniqueid = yes
loguserfield = yes
accountlogs = no
""",
            "rtp.conf": f"[general]\nrtpstart={self.rtp_base}\nrtpend={self.rtp_base + 998}\n",
            "pjsip.conf": self._pjsip_conf(),
            "extensions.conf": DIALPLAN.format(),
            "queues.conf": self._queues_conf(),
            "musiconhold.conf": "[general]\n",
            "http.conf": "[general]\nenabled = no\n",
            "manager.conf": "[general]\nenabled = no\n",
        }
        for name, text in files.items():
            (etc / name).write_text(text)

    # ---------------------------------------------------------------------------- run

    def start(self, proxy_hostport: str, ready_timeout: float = 60.0) -> AsteriskBox:
        """Write the configuration (calls out go to ``proxy_hostport``), start Asterisk in the
        foreground and return once it is fully booted."""
        if self.process is not None and self.process.running():
            raise HarnessError(f"{self.name} is already running")
        self.proxy_hostport = proxy_hostport
        self._write_config()
        argv = [str(self.prefix / "sbin" / "asterisk"), "-C", str(self.conf), "-f", "-n", "-q"]
        self.process = ManagedProcess(f"asterisk-{self.name}", argv, self.workdir)
        self.process.spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(f"{self.name} exited at start:\n{self.log_tail()}")
            if (self.rundir / "asterisk.ctl").exists():
                done = self.cli_run("core waitfullybooted", timeout=ready_timeout)
                if done.returncode == 0 and "fully booted" in done.stdout.lower():
                    return self
            time.sleep(0.2)
        self.stop()
        raise HarnessError(f"{self.name} not fully booted in {ready_timeout}s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after a grace) to the Asterisk started here, by PID."""
        return None if self.process is None else self.process.stop(grace=10.0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.rundir, ignore_errors=True)

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def cli_run(self, command: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.prefix / "sbin" / "asterisk"), "-C", str(self.conf), "-rx", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def cli(self, command: str) -> str:
        """Run one CLI command through this box's control socket; its output."""
        done = self.cli_run(command)
        if done.returncode != 0:
            raise HarnessError(f"{self.name}: asterisk -rx {command!r} failed: {done.stderr}")
        return done.stdout

    def log_tail(self, lines: int = 30) -> str:
        out = [self.process.output_tail(lines)] if self.process is not None else []
        messages = self.logdir / "messages.log"
        if messages.exists():
            out.append("--- messages.log\n" + "\n".join(messages.read_text().splitlines()[-lines:]))
        return "\n".join(out)

    # ---------------------------------------------------------------------------- records

    def cdrs(self) -> list[CdrRow]:
        """The calls this box recorded (Master.csv; written when each call ends)."""
        path = self.logdir / "cdr-csv" / "Master.csv"
        if not path.exists():
            return []
        # accountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,answer,
        # end,duration,billsec,disposition,amaflags,uniqueid,userfield
        with path.open(newline="") as f:
            return [
                CdrRow(r[1], r[2], r[3], r[5], r[6], r[14], r[16], r[17]) for r in csv.reader(f)
            ]

    def queue_events(self) -> list[QueueEvent]:
        path = self.logdir / "queue_log"
        if not path.exists():
            return []
        events = []
        for line in path.read_text().splitlines():
            fields = line.split("|")
            if len(fields) >= 5:
                events.append(
                    QueueEvent(fields[1], fields[2], fields[3], fields[4], tuple(fields[5:]))
                )
        return events

    def sip_messages(self) -> list[tuple[str, str]]:
        """Every SIP message this box logged (``sip_debug``), in order: (``"in"`` or
        ``"out"``, the message's text)."""
        path = self.logdir / "messages.log"
        if not path.exists():
            return []
        found: list[tuple[str, str]] = []
        current: list[str] | None = None
        direction = ""
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("["):
                if current is not None:
                    found.append((direction, "\n".join(current)))
                current = None
                if "<--- Received SIP" in line:
                    direction, current = "in", []
                elif "<--- Transmitting SIP" in line:
                    direction, current = "out", []
            elif current is not None:
                current.append(line)
        if current is not None:
            found.append((direction, "\n".join(current)))
        return found

    def _of_call(self, call_id: str, direction: str) -> list[str]:
        mark = f"Call-ID: {call_id}"
        return [text for d, text in self.sip_messages() if d == direction and mark in text]

    def sip_requests(self, call_id: str, method: str) -> list[str]:
        """The ``method`` requests of that call this box received (as logged)."""
        return [m for m in self._of_call(call_id, "in") if m.startswith(f"{method} ")]

    def sip_sent(self, call_id: str, method: str) -> list[str]:
        """The ``method`` requests of that call this box sent."""
        return [m for m in self._of_call(call_id, "out") if m.startswith(f"{method} ")]

    def sip_answered(self, call_id: str, method: str) -> int:
        """How many 2xx this box sent to ``method`` requests of that call."""
        return sum(
            1
            for m in self._of_call(call_id, "out")
            if m.startswith("SIP/2.0 2") and f" {method}" in _header(m, "CSeq")
        )

    def calls_from(self, user: str) -> list[str]:
        """Call-IDs of the INVITEs from ``user`` this box received, in order (``sip_debug``)."""
        found: list[str] = []
        for direction, text in self.sip_messages():
            if (
                direction == "in"
                and text.startswith("INVITE ")
                and f"sip:{user}@" in _header(text, "From")
            ):
                call_id = _header(text, "Call-ID")
                if call_id not in found:
                    found.append(call_id)
        return found

    def has_call(self, call_id: str) -> bool:
        return bool(self._of_call(call_id, "in"))

    def wait_sip(
        self, call_id: str, method: str, *, count: int, answered: bool, timeout: float = 10.0
    ) -> None:
        """Wait until this box received ``count`` ``method`` requests of that call (and, if
        ``answered``, sent as many 2xx less the ones challenged)."""

        def done() -> bool:
            got = len(self.sip_requests(call_id, method))
            challenged = sum(
                1
                for m in self._of_call(call_id, "out")
                if m.startswith("SIP/2.0 401") and f" {method}" in _header(m, "CSeq")
            )
            return got >= count and (
                not answered or self.sip_answered(call_id, method) >= got - challenged
            )

        wait_until(done, timeout, f"{self.name}: {count} {method} of {call_id}")

    def registered(self, endpoint: str) -> bool:
        """Whether ``endpoint`` has a registered contact here (``pjsip show aor``)."""
        out = self.cli_run(f"pjsip show aor {endpoint}").stdout
        return "contact:" in out.lower() and f"{endpoint}/sip:" in out


def _header(message: str, name: str) -> str:
    for line in message.splitlines():
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def wait_until(check: object, timeout: float, what: str, period: float = 0.2) -> None:
    """Poll ``check()`` until it is true; AssertionError naming ``what`` after ``timeout``."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(period)
    raise AssertionError(f"{what}: not within {timeout}s")
