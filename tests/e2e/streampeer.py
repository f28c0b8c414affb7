"""SIP over TCP from a test, for what sipp cannot do (close a connection mid-call, listen at
its Via sent-by): framing by Content-Length, reading messages with a deadline, answering."""

from __future__ import annotations

import re
import socket
import time

_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)
#: what a response copies from its request (RFC 3261 8.2.6)
COPIED = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def frames(buffer: bytearray) -> list[bytes]:
    """Whole messages off the front of ``buffer`` (framed by Content-Length)."""
    out = []
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return out
        match = _CONTENT_LENGTH.search(bytes(buffer[:end]))
        total = end + 4 + (int(match.group(1)) if match else 0)
        if len(buffer) < total:
            return out
        out.append(bytes(buffer[:total]))
        del buffer[:total]


def header(message: bytes, *names: str) -> str:
    """The first value of the header called any of ``names`` (lower case), or ""."""
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.decode(errors="replace").partition(":")
        if name.strip().lower() in names:
            return value.strip()
    return ""


def response_to(request: bytes, status: int, reason: str) -> bytes:
    """A response copying Via, From, To, Call-ID and CSeq of ``request``."""
    lines = [f"SIP/2.0 {status} {reason}"]
    for line in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        text = line.decode(errors="replace")
        if text.partition(":")[0].strip().lower() in COPIED:
            lines.append(text)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Stream:
    """One TCP connection carrying SIP messages (blocking, each read bounded in time)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._ready: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, within: float = 5.0) -> bytes:
        """The next whole message; TimeoutError if none comes in time, EOFError if closed."""
        deadline = time.monotonic() + within
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no SIP message in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise EOFError("connection closed")
            self._buffer.extend(data)
            self._ready.extend(frames(self._buffer))
        return self._ready.pop(0)

    def close(self) -> None:
        self.sock.close()
