"""linphone (Debian's ``linphone-cli``) as a real user agent in tests: ``linphonec`` driven on
its standard input, its reports read from its standard output (``Call 1 with ... connected.``).

No sound card: ``soundcard use files`` makes linphone play and record files (silence when none
is set) on a clock of its own, so RTP flows both ways as on a phone. ``linphone-daemon`` has no
such switch; given ALSA's ``null`` device instead, its audio thread spins and the daemon stops
answering on the first ``call-pause``. Everything a run keeps is in its own folder: the
linphonerc and the call database (``HOME`` points there). The SIP ports must be real ones: with
``sip_port=-1`` there is no listening point and no INVITE ever leaves.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from sipphelpers import HarnessError, free_port


def linphonec_binary() -> str:
    path = shutil.which("linphonec")
    if path is None:
        raise HarnessError("linphonec not found: run hack/bootstrap --with-tests (linphone-cli)")
    return path


class Linphonec:
    """One linphonec on ``ip`` (SIP on UDP and TCP, one port) calling as ``user`` with
    ``password`` through the outbound proxy ``proxy_uri`` (e.g.
    ``sip:127.0.0.1:5060;transport=tcp``). It does not REGISTER; it answers challenges."""

    def __init__(self, workdir: Path, user: str, password: str, ip: str, proxy_uri: str) -> None:
        self.user = user
        self.ip = ip
        self.port = free_port(ip)
        self.dir = workdir / f"linphone-{user}-{self.port}"
        (self.dir / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        rtp = 42000 + (self.port % 200) * 20
        (self.dir / "linphonerc").write_text(
            f"[sip]\nsip_port={self.port}\nsip_tcp_port={self.port}\nsip_tls_port=0\n"
            f"bind_address={ip}\nuse_ipv6=0\ncontact=<sip:{user}@{ip}>\ndefault_proxy=0\n"
            f"[rtp]\naudio_rtp_port={rtp}-{rtp + 19}\n"
            "[sound]\nechocancellation=0\n"
            "[video]\ncapture=0\ndisplay=0\nautomatically_initiate=0\n"
            # the proxy as the first hop of every request; no REGISTER
            f"[proxy_0]\nreg_proxy=<{proxy_uri}>\nreg_route=<{proxy_uri};lr>\n"
            f"reg_identity=<sip:{user}@{ip}>\nreg_sendregister=0\n"
            f"[auth_info_0]\nusername={user}\npasswd={password}\n"
        )
        self.argv = [
            linphonec_binary(),
            "-c",
            str(self.dir / "linphonerc"),
            "-l",
            str(self.dir / "linphone.log"),
            "-d",
            "5",
        ]
        self.proc: subprocess.Popen[str] | None = None
        #: every line linphonec printed, in order
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> Linphonec:
        env = {**os.environ, "HOME": str(self.dir)}
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env=env,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.command("soundcard use files")
        self.wait_line(r"Using wav files instead of soundcard", timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with (self.dir / "linphonec.stdout").open("w") as copy:
            for line in self.proc.stdout:
                copy.write(line)
                copy.flush()
                with self._lock:
                    self.lines.append(line.rstrip("\n"))

    def command(self, line: str) -> int:
        """Type one command; the index in :attr:`lines` from which its reports follow."""
        if self.proc is None or self.proc.stdin is None or self.proc.poll() is not None:
            raise HarnessError(f"linphonec {self.user} not running:\n{self.tail()}")
        with self._lock:
            mark = len(self.lines)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return mark

    def wait_line(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match[str]:
        """The first line at index ``after`` or later matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.lines[after:]:
                    match = regex.search(line)
                    if match:
                        return match
            time.sleep(0.05)
        raise AssertionError(
            f"linphonec {self.user}: no line /{pattern}/ within {timeout}s:\n{self.tail()}"
        )

    def tail(self, count: int = 20) -> str:
        with self._lock:
            return "\n".join(self.lines[-count:])

    def stop(self, timeout: float = 5.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.command("quit")
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)  # it ends at the end of linphonec's output
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return proc.returncode
