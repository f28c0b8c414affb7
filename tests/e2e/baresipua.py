"""baresip (Debian's ``baresip-core``) as a real user agent in tests, driven through its
``ctrl_tcp`` module: commands and events as JSON in netstrings on a TCP socket.

No sound card: the audio source is a sine (``ausine``) and the player a bridge to nowhere
(``aubridge``), so RTP flows both ways as on a phone.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sipphelpers import HarnessError, ManagedProcess, free_port


def baresip_binary() -> str:
    path = shutil.which("baresip")
    if path is None:
        raise HarnessError("baresip not found: run hack/bootstrap --with-tests (baresip-core)")
    return path


class Baresip:
    """One baresip process with one account, listening on ``ip`` (UDP and TCP).

    ``account``: the account line without its parameters' defaults, e.g.
    ``<sip:alice@127.0.0.1:5060;transport=tcp>;auth_pass=pw;regint=0``.
    """

    def __init__(self, workdir: Path, name: str, ip: str, account: str) -> None:
        self.name = name
        self.ip = ip
        self.port = free_port(ip)
        self.ctrl_port = free_port("127.0.0.1")
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        rtp = 40000 + (self.port % 200) * 100
        (self.dir / "config").write_text(
            f"poll_method epoll\n"
            f"sip_listen {ip}:{self.port}\n"
            "audio_player aubridge,nowhere\n"
            "audio_source ausine,440\n"
            "audio_alert aubridge,nowhere\n"
            # ausine makes 48 kHz stereo only; baresip resamples to the codec's 8 kHz
            "ausrc_srate 48000\nausrc_channels 2\nauplay_srate 48000\n"
            f"rtp_ports {rtp}-{rtp + 99}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule ausine.so\nmodule aubridge.so\n"
            "module_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n"
        )
        (self.dir / "accounts").write_text(account + "\n")
        self.process = ManagedProcess(
            f"baresip-{name}", [baresip_binary(), "-f", str(self.dir)], self.dir
        )
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._token = 0
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> Baresip:
        self.process.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(f"baresip {self.name} exited:\n{self.process.output_tail()}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise HarnessError(
                f"baresip {self.name}: no control socket:\n{self.process.output_tail()}"
            )
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b":" in buf:
                length, _, rest = buf.partition(b":")
                if not length.isdigit() or len(rest) < int(length) + 1:
                    break
                body, buf = rest[: int(length)], rest[int(length) + 1 :]
                message = json.loads(body)
                with self._lock:
                    if message.get("event"):
                        message["at"] = time.monotonic()
                        self.events.append(message)
                    elif "token" in message:
                        self._responses[str(message["token"])] = message

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Send one command (as typed in baresip's menu, without the slash); its response."""
        if self._sock is None:
            raise HarnessError(f"baresip {self.name} not started")
        with self._lock:
            self._token += 1
            token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if token in self._responses:
                    return self._responses.pop(token)
            time.sleep(0.02)
        raise HarnessError(f"baresip {self.name}: no response to {command} {params}")

    def event_types(self) -> list[str]:
        with self._lock:
            return [str(e.get("type")) for e in self.events]

    def wait_event(self, kind: str, timeout: float = 10.0, after: int = 0) -> dict[str, Any]:
        """The first event of type ``kind`` (e.g. ``CALL_ESTABLISHED``) at index ``after`` or
        later of :attr:`events`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events[after:]:
                    if event.get("type") == kind:
                        return event
            time.sleep(0.05)
        raise AssertionError(
            f"baresip {self.name}: no {kind} within {timeout}s; events {self.event_types()[after:]}"
        )

    def stop(self) -> int | None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        return self.process.stop()
