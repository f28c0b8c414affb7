"""``sipdispatch-proxy`` as a real process for end-to-end tests, stopped by PID."""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sipphelpers import HarnessError, ManagedProcess, SippGateway, free_port, sip_options_ping


def proxy_command() -> list[str]:
    found = shutil.which("sipdispatch-proxy", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "sipdispatch.proxy"]


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
    ) -> None:
        self.workdir = workdir
        self.ip = "127.0.0.1"
        self.port = free_port(self.ip)
        self.control_port = free_port(self.ip)
        self.table = workdir / "dispatcher.list"
        workdir.mkdir(parents=True, exist_ok=True)
        suffix = ";transport=tcp" if transport == "tcp" else ""
        self.table.write_text(
            table_text
            if table_text is not None
            else "".join(f"1 sip:{gw.hostport}{suffix}\n" for gw in gateways)
        )
        argv = [
            *proxy_command(),
            "--dispatcher-list",
            str(self.table),
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
