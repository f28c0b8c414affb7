"""Kamailio as a gateway that authenticates every INVITE with its own nonces (digest).

Rendered from ``tests/sipp/kamailio/auth-gateway.cfg.tmpl``; its log says, per Call-ID, which
INVITEs it challenged, which it answered and which BYEs it got, so every call is accounted
for by the gateways themselves.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from sipphelpers import (
    HARNESS_PING_PREFIX,
    REPO_ROOT,
    HarnessError,
    ManagedProcess,
    free_port,
    kamailio_binary,
    render_template,
    sip_options_ping,
)

__all__ = ["KamailioAuthGateway", "KamailioRecordingGateway"]

TEMPLATE = REPO_ROOT / "tests" / "sipp" / "kamailio" / "auth-gateway.cfg.tmpl"
RECORDING_TEMPLATE = REPO_ROOT / "tests" / "sipp" / "kamailio" / "recording-gateway.cfg.tmpl"
_EVENT = re.compile(r"\b(CHALLENGE|ANSWER|BYE) (\S+)")
_SEEN = re.compile(r"\bSEEN (\S+) (\S+) (\d+) (\S+) RR=(.*)")
_ROUTE = re.compile(r"<[^>]*>[^,]*")


class _KamailioGateway:
    """A Kamailio from ``template`` on ``ip`` (UDP, a free port), started in the foreground
    with its output in files; ready once it answers OPTIONS."""

    def __init__(
        self, workdir: Path, name: str, ip: str, template: Path, values: Mapping[str, object]
    ) -> None:
        binary = kamailio_binary()
        if binary is None:
            raise HarnessError("kamailio not installed (Debian package kamailio)")
        self.name = name
        self.ip = ip
        self.port = free_port(ip)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / f"{name}.cfg"
        cfg.write_text(render_template(template, {"LISTEN_IP": ip, "PORT": self.port, **values}))
        rundir = workdir / f"{name}.run"
        rundir.mkdir(exist_ok=True)
        argv = [binary, "-f", str(cfg), "-P", str(workdir / f"{name}.pid"), "-Y", str(rundir)]
        argv += ["-DD", "-E", "-m", "32", "-M", "4"]
        self.process = ManagedProcess(name, argv, workdir)

    @property
    def uri(self) -> str:
        return f"sip:{self.ip}:{self.port}"

    def start(self, ready_timeout: float = 15.0) -> Self:
        self.process.spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(f"{self.name} exited: {self.process.output_tail(40)}")
            if sip_options_ping(self.ip, self.port, "udp", 0.5) == 200:
                return self
            time.sleep(0.1)
        self.process.stop()
        raise HarnessError(f"{self.name} not answering OPTIONS: {self.process.output_tail(40)}")

    def stop(self) -> int | None:
        return self.process.stop()


class KamailioAuthGateway(_KamailioGateway):
    """One instance on ``ip`` (UDP, a free port), with a nonce secret of its own."""

    def __init__(self, workdir: Path, name: str, ip: str, password: str) -> None:
        values = {"SECRET": secrets.token_hex(16), "PASSWORD": password}
        super().__init__(workdir, name, ip, TEMPLATE, values)

    def events(self) -> dict[str, Counter[str]]:
        """Call-ID -> how many INVITEs it challenged and answered, and BYEs it got."""
        seen: dict[str, Counter[str]] = {}
        for match in _EVENT.finditer(self.process.stderr_path.read_text(errors="replace")):
            seen.setdefault(match.group(2), Counter())[match.group(1)] += 1
        return seen


class KamailioRecordingGateway(_KamailioGateway):
    """Kamailio answering every call on ``ip`` (UDP, a free port) and logging the source
    address of every request it receives, as its socket saw it, and each INVITE's
    Record-Route values (``tests/sipp/kamailio/recording-gateway.cfg.tmpl``)."""

    def __init__(self, workdir: Path, name: str, ip: str) -> None:
        super().__init__(workdir, name, ip, RECORDING_TEMPLATE, {})

    def _seen(self) -> list[re.Match[str]]:
        """The requests logged, but the harness's own readiness pings."""
        log = self.process.stderr_path.read_text(errors="replace")
        return [m for m in _SEEN.finditer(log) if not m.group(4).startswith(HARNESS_PING_PREFIX)]

    @property
    def received(self) -> list[tuple[tuple[str, int], str]]:
        """(source address, method) of every request received, in order."""
        return [((m.group(2), int(m.group(3))), m.group(1)) for m in self._seen()]

    def sources(self, method: str | None = None) -> set[tuple[str, int]]:
        return {source for source, m in self.received if method in (None, m)}

    @property
    def record_routes(self) -> list[list[str]]:
        """The Record-Route values of every INVITE received, top first."""
        return [
            [route.strip() for route in _ROUTE.findall(m.group(5))]
            for m in self._seen()
            if m.group(1) == "INVITE"
        ]
