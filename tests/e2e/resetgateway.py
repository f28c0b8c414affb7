"""A scripted TCP gateway that resets every connection an INVITE arrives on.

A real gateway cannot be made to send a RST at will, so this stand-in does only that: it
accepts connections, answers OPTIONS with 200 (so probing keeps it up), and when an INVITE
arrives closes the connection with SO_LINGER 0, which makes the kernel send a RST. It records
each INVITE's Call-ID with the Unix time of the reset, comparable with sipp's message logs.
It runs in a thread of the test process, on its own loopback address, and stops when told.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time

from streampeer import frames, header, response_to


class ResettingGateway:
    """Listens on ``ip:port`` over TCP; ``resets`` maps Call-ID -> Unix time of its RST."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.resets: dict[str, float] = {}
        self.options = 0
        self._stop = threading.Event()
        self._listener = socket.create_server((ip, port), backlog=128)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._buffers: dict[socket.socket, bytearray] = {}
        self._thread = threading.Thread(target=self._run, name="resetting-gateway", daemon=True)

    @property
    def uri(self) -> str:
        return f"sip:{self.ip}:{self.port};transport=tcp"

    def start(self) -> ResettingGateway:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in list(self._buffers):
            self._drop(sock)
        self._selector.close()
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._read(sock)

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._buffers[conn] = bytearray()
        self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        buffer = self._buffers[sock]
        buffer.extend(data)
        invites = []
        for message in frames(buffer):
            if message.startswith(b"OPTIONS "):
                self.options += 1
                sock.sendall(response_to(message, 200, "OK"))
            elif message.startswith(b"INVITE "):
                invites.append(header(message, "call-id", "i"))
        if invites:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._drop(sock)  # closed with linger 0: a RST
            now = time.time()
            for call_id in invites:
                self.resets.setdefault(call_id, now)

    def _drop(self, sock: socket.socket) -> None:
        self._buffers.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):  # never registered, or closed
            self._selector.unregister(sock)
        sock.close()
