"""A real DNS server for the tests: Debian's dnsmasq on a loopback port, with its own zone.

Records come from two files the test writes: a hosts file (A/AAAA, re-read on SIGHUP, so a
record can be removed while the server runs) and a configuration file (SRV and the rest, read
at start: `restart` applies a change). Names under ``test`` that it does not know get
NXDOMAIN (``--local=/test/``): it never asks anyone else. Stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from sipphelpers import free_port

__all__ = ["Dnsmasq", "dnsmasq_available"]


def dnsmasq_available() -> bool:
    return shutil.which("dnsmasq") is not None or Path("/usr/sbin/dnsmasq").exists()


def _binary() -> str:
    return shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class Dnsmasq:
    """``hosts``: ``(ip, name)`` pairs; ``srv``: ``(service, target, port, priority, weight)``."""

    def __init__(self, workdir: Path, *, ttl: int = 1, ip: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.ttl = ttl
        self.ip = ip
        self.port = free_port(ip)
        self.hosts_file = workdir / "dns-hosts"
        self.conf_file = workdir / "dnsmasq.conf"
        self.log_file = workdir / "dnsmasq.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        """What ``--dns-server`` takes."""
        return f"{self.ip}:{self.port}"

    def write(
        self,
        hosts: Iterable[tuple[str, str]] = (),
        srv: Iterable[tuple[str, str, int, int, int]] = (),
    ) -> None:
        self.hosts_file.write_text("".join(f"{ip} {name}\n" for ip, name in hosts))
        self.conf_file.write_text(
            "".join(
                f"srv-host={s},{t},{port},{prio},{weight}\n" for s, t, port, prio, weight in srv
            )
        )

    def start(self) -> None:
        self.log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [
                _binary(),
                "--keep-in-foreground",
                f"--port={self.port}",
                f"--listen-address={self.ip}",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/test/",
                f"--addn-hosts={self.hosts_file}",
                f"--conf-file={self.conf_file}",
                f"--local-ttl={self.ttl}",
                f"--auth-ttl={self.ttl}",
                "--pid-file=",
                *(["--user=root"] if os.geteuid() == 0 else []),  # root: read our files
                "--log-queries",
                "--log-facility=-",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.log_file.read_text()[-2000:]}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.settimeout(0.2)
                # a bare query for "test." of type SOA; any answer means it is up
                query = (
                    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00\x01"
                )
                probe.sendto(query, (self.ip, self.port))
                try:
                    probe.recv(512)
                    return
                except OSError:
                    continue
        raise RuntimeError("dnsmasq did not answer within 5 s")

    def reload_hosts(self) -> None:
        """Make it read the hosts file again (SIGHUP)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "log", None) is not None:
            self.log.close()
