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
from pathlib import Path

from sipphelpers import (
    REPO_ROOT,
    HarnessError,
    ManagedProcess,
    free_port,
    kamailio_binary,
    render_template,
    sip_options_ping,
)

__all__ = ["KamailioAuthGateway"]

TEMPLATE = REPO_ROOT / "tests" / "sipp" / "kamailio" / "auth-gateway.cfg.tmpl"
_EVENT = re.compile(r"\b(CHALLENGE|ANSWER|BYE) (\S+)")


class KamailioAuthGateway:
    """One instance on ``ip`` (UDP, a free port), with a nonce secret of its own."""

    def __init__(self, workdir: Path, name: str, ip: str, password: str) -> None:
        binary = kamailio_binary()
        if binary is None:
            raise HarnessError("kamailio not installed (Debian package kamailio)")
        self.name = name
        self.ip = ip
        self.port = free_port(ip)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / f"{name}.cfg"
        values = {
            "LISTEN_IP": ip,
            "PORT": self.port,
            "SECRET": secrets.token_hex(16),
            "PASSWORD": password,
        }
        cfg.write_text(render_template(TEMPLATE, values))
        rundir = workdir / f"{name}.run"
        rundir.mkdir(exist_ok=True)
        argv = [binary, "-f", str(cfg), "-P", str(workdir / f"{name}.pid"), "-Y", str(rundir)]
        argv += ["-DD", "-E", "-m", "32", "-M", "4"]
        self.process = ManagedProcess(name, argv, workdir)

    @property
    def uri(self) -> str:
        return f"sip:{self.ip}:{self.port}"

    def start(self, ready_timeout: float = 15.0) -> KamailioAuthGateway:
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

    def events(self) -> dict[str, Counter[str]]:
        """Call-ID -> how many INVITEs it challenged and answered, and BYEs it got."""
        seen: dict[str, Counter[str]] = {}
        for match in _EVENT.finditer(self.process.stderr_path.read_text(errors="replace")):
            seen.setdefault(match.group(2), Counter())[match.group(1)] += 1
        return seen
