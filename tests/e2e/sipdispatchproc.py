"""``sipdispatch-proxy`` as a real process for end-to-end tests, stopped by PID."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipphelpers import (
    HarnessError,
    ManagedProcess,
    SippGateway,
    free_port,
    proxy_command,
    sip_options_ping,
)


def ctl_command() -> list[str]:
    """``sipdispatch-ctl`` of this environment, as a user runs it."""
    found = shutil.which("sipdispatch-ctl", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "sipdispatch.proxy.ctl"]


def run_compiled(proxy_command: list[str], script: Path, *args: str) -> str:
    """Run ``script`` with the Python of the compiled build whose ``sipdispatch-proxy`` is
    ``proxy_command`` (where its C modules exist); its output, or ``HarnessError`` with it
    when it fails."""
    python = Path(proxy_command[0]).parent / "python"
    checked = subprocess.run(
        [str(python), str(script), *args], capture_output=True, text=True, timeout=300, check=False
    )
    if checked.returncode != 0:
        raise HarnessError(checked.stdout[-3000:] + checked.stderr[-3000:])
    return checked.stdout


def hot_path_compiled(python: str) -> bool | None:
    """Whether that interpreter's sipdispatch runs its hot path compiled with mypyc
    (``hack/build-native``) or pure Python; None when it has no sipdispatch."""
    try:
        out = subprocess.run(
            [python, "-c", "import sipdispatch.proxy.core as c; print(c.__file__)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return not out.stdout.strip().endswith(".py")


def send_datagrams(ip: str, port: int, payloads: list[bytes], wait: float = 1.0) -> list[bytes]:
    """Send each payload as one datagram from one socket; return every datagram received."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for payload in payloads:
            sock.sendto(payload, (ip, port))
        sock.settimeout(0.2)
        received = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                received.append(sock.recv(65535))
            except TimeoutError:
                continue
    return received


class SipdispatchProxy:
    """The proxy on 127.0.0.1 with UDP and TCP listeners on one free port."""

    def __init__(
        self,
        workdir: Path,
        gateways: Sequence[SippGateway],
        *,
        transport: str = "udp",
        extra_args: Sequence[str] = (),
        table_text: str | None = None,
        config_text: str | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        """``config_text``: a YAML configuration (``--config config.yaml``) instead of a
        dispatcher.list; ``{PORT}`` in it is replaced by the proxy's port. ``command``: another
        build's ``sipdispatch-proxy`` (default: this environment's)."""
        self.workdir = workdir
        self.ip = "127.0.0.1"
        self.port = free_port(self.ip)
        self.control_port = free_port(self.ip)
        workdir.mkdir(parents=True, exist_ok=True)
        suffix = ";transport=tcp" if transport == "tcp" else ""
        if config_text is not None:
            self.table = workdir / "config.yaml"
            self.table.write_text(config_text.replace("{PORT}", str(self.port)))
            table_args = ["--config", str(self.table)]
        else:
            self.table = workdir / "dispatcher.list"
            self.table.write_text(
                table_text
                if table_text is not None
                else "".join(f"1 sip:{gw.hostport}{suffix}\n" for gw in gateways)
            )
            table_args = ["--dispatcher-list", str(self.table)]
        argv = [
            *(command or proxy_command()),
            *table_args,
            "--listen",
            f"udp:{self.ip}:{self.port}",
            "--listen",
            f"tcp:{self.ip}:{self.port}",
            "--control",
            f"{self.ip}:{self.control_port}",
            "--log-level",
            "info",
            *extra_args,
        ]
        self.process = ManagedProcess("sipdispatch", argv, workdir)

    @property
    def control_url(self) -> str:
        return f"http://{self.ip}:{self.control_port}"

    def api(self, path: str) -> Any:
        """GET a control API path, decoded from JSON."""
        with urllib.request.urlopen(self.control_url + path, timeout=5) as response:
            return json.loads(response.read())

    def in_flight(self) -> int:
        """Transactions and branches the proxy holds right now."""
        status = self.api("/v1/destinations")["status"]
        return int(status["transactions"]) + int(status["branches"])

    def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        with urllib.request.urlopen(self.control_url + "/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text

    def metric(self, line_start: str) -> float:
        """The value of the first ``/metrics`` sample starting with ``line_start`` (0 if none)."""
        for line in self.metrics().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def ctl(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """Run ``sipdispatch-ctl --url <this proxy> ARGS`` as a user would."""
        return subprocess.run(
            [*ctl_command(), "--url", self.control_url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def destination(self, uri: str, set_id: int = 1) -> dict[str, Any]:
        """One destination of ``sipdispatch-ctl list --json``."""
        done = self.ctl("list", "--json")
        if done.returncode != 0:
            raise HarnessError(f"sipdispatch-ctl list failed: {done.stderr}")
        for dest_set in json.loads(done.stdout)["sets"]:
            if dest_set["id"] == set_id:
                for dest in dest_set["destinations"]:
                    if dest["uri"] == uri:
                        return dict(dest)
        raise HarnessError(f"{uri} not in set {set_id}: {done.stdout}")

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"

    def start(self, ready_timeout: float = 15.0) -> SipdispatchProxy:
        self.process.spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(f"sipdispatch exited: {self.process.output_tail()}")
            if sip_options_ping(self.ip, self.port, timeout=0.3) == 200:
                return self
        raise HarnessError(f"sipdispatch did not answer OPTIONS: {self.process.output_tail()}")

    def log(self) -> str:
        return self.process.stderr_path.read_text(errors="replace")

    def stop(self) -> int | None:
        return self.process.stop()


@dataclass(frozen=True)
class StateSample:
    """One look at a destination through ``sipdispatch-ctl list --json``."""

    time: float  # time.time() when the answer came
    state: str
    reason: str
    changed_at: float | None  # the proxy's own time of the last change (Unix time)


class StateWatcher:
    """Polls ``sipdispatch-ctl list --json`` in a thread, as an operator watching would, and
    keeps every sample of one destination's state."""

    def __init__(self, proxy: SipdispatchProxy, uri: str, period: float = 0.1) -> None:
        self.proxy = proxy
        self.uri = uri
        self.period = period
        self.samples: list[StateSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StateWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                dest = self.proxy.destination(self.uri)
            except (HarnessError, subprocess.TimeoutExpired, ValueError):
                continue
            self.samples.append(
                StateSample(time.time(), dest["state"], dest["reason"], dest["changedAt"])
            )
            self._stop.wait(self.period)

    def states(self, since: float = 0.0) -> list[str]:
        """The distinct states seen since ``since``, in order."""
        out: list[str] = []
        for sample in list(self.samples):
            if sample.time >= since and (not out or out[-1] != sample.state):
                out.append(sample.state)
        return out

    def first(self, state: str, since: float = 0.0) -> StateSample | None:
        return next((s for s in list(self.samples) if s.time >= since and s.state == state), None)

    def wait_for(self, state: str, since: float, timeout: float) -> StateSample:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first(state, since)
            if found is not None:
                return found
            time.sleep(0.02)
        raise AssertionError(
            f"{self.uri} never showed {state} within {timeout}s; seen {self.states(since)}"
        )
