"""A running ``sipdispatch-proxy`` process against hostile input, over UDP and TCP: each
request gets a 400 (or 513), each bad response is dropped and counted, no traceback reaches
the log, and a TCP connection carries on with the next request."""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile import HOSTILE_REQUESTS, bare_branch_response, request

from sipdispatch.sip import codec
from sipdispatch.sip.message import Response
from sipphelpers import control_page, free_port, proxy_command


@dataclass
class RunningProxy:
    port: int
    control: int
    log: Path

    def metric(self, name: str, labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/metrics") as page:
            text = page.read().decode()
        found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.1:9\n")  # nobody there: nothing here is forwarded
    port, control = free_port(), free_port()
    log = tmp_path / "proxy.log"
    command = proxy_command()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *command,
                *("--dispatcher-list", str(table)),
                *("--listen", f"udp:127.0.0.1:{port}", "--listen", f"tcp:127.0.0.1:{port}"),
                *("--control", f"127.0.0.1:{control}", "--probe-mode", "off"),
                *("--max-message-size", "8000"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        running = RunningProxy(port, control, log)
        control_page(f"http://127.0.0.1:{control}/readyz", process, log)
        yield running
    finally:
        process.terminate()
        process.wait(10)


def _udp_exchange(port: int, data: bytes, wait: float = 1.0) -> Response | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(wait)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            answer = codec.parse(sock.recv(65535))
        except TimeoutError:
            return None
    assert isinstance(answer, Response)
    return answer


class TcpPeer:
    """One TCP connection to the proxy, reading its answers one message at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3.0)
        self.framer = codec.StreamFramer()
        self.pending: list[bytes] = []

    def exchange(self, data: bytes) -> Response:
        self.sock.sendall(data)
        while not self.pending:
            chunk = self.sock.recv(65535)
            assert chunk, "the proxy closed the connection"
            self.pending += self.framer.feed(chunk)
        answer = codec.parse(self.pending.pop(0), datagram=False)
        assert isinstance(answer, Response)
        return answer

    def close(self) -> None:
        self.sock.close()


def _options(port: int, tag: str, transport: str) -> bytes:
    """An OPTIONS to the proxy itself, which it answers 200: the connection still serves."""
    return (
        request("127.0.0.1", port, f"next-{tag}", transport)
        .replace(b"INVITE sip:svc@", b"OPTIONS sip:")
        .replace(b"CSeq: 1 INVITE", b"CSeq: 1 OPTIONS")
    )


def test_hostile_input_is_answered_over_udp_and_tcp_and_the_connection_goes_on(
    proxy: RunningProxy,
) -> None:
    port = proxy.port
    for name, make in HOSTILE_REQUESTS.items():
        answer = _udp_exchange(port, make(request("127.0.0.1", port, f"u-{name}")))
        assert answer is not None, name
        assert (name, answer.status) == (name, 400)
    tcp = TcpPeer(port)
    try:
        for name, make in HOSTILE_REQUESTS.items():
            answer = tcp.exchange(make(request("127.0.0.1", port, f"t-{name}", "TCP")))
            assert (name, answer.status) == (name, 400)
            assert tcp.exchange(_options(port, name, "TCP")).status == 200, name
        # a response to the bare branch prefix: no answer, and the connection goes on
        tcp.sock.sendall(bare_branch_response("bare-tcp", "TCP"))
        assert tcp.exchange(_options(port, "bare", "TCP")).status == 200
    finally:
        tcp.close()
    assert _udp_exchange(port, bare_branch_response("bare-udp"), wait=0.3) is None
    rejected_400 = proxy.metric("sipdispatch_messages_rejected_total", 'status="400"')
    assert rejected_400 == 2 * len(HOSTILE_REQUESTS) + 2  # every request, and both responses
    log = proxy.log.read_text()
    assert "Traceback" not in log
    assert "rejected request" in log


def test_messages_over_the_limits_get_513_or_400_and_are_counted_by_limit(
    proxy: RunningProxy,
) -> None:
    port = proxy.port
    padding = b"X-Pad: " + b"p" * 9000 + b"\r\n"  # over --max-message-size 8000
    big = request("127.0.0.1", port, "big-udp").replace(b"Max-Forwards", padding + b"Max-Forwards")
    answer = _udp_exchange(port, big)
    assert answer is not None
    assert (answer.status, answer.reason) == (513, "Message Too Large")
    many = b"".join(b"X-%d: x\r\n" % i for i in range(150))
    crowded = request("127.0.0.1", port, "many-udp").replace(
        b"Max-Forwards", many + b"Max-Forwards"
    )
    answer = _udp_exchange(port, crowded)
    assert answer is not None
    assert (answer.status, answer.reason) == (400, "Too Many Headers")
    tcp = TcpPeer(port)
    try:
        body = b"b" * 9000
        large = request("127.0.0.1", port, "big-tcp", "TCP").replace(
            b"Content-Length: 0\r\n\r\n", b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert tcp.exchange(large + body).status == 513
        assert tcp.exchange(_options(port, "after-big", "TCP")).status == 200
    finally:
        tcp.close()
    assert proxy.metric("sipdispatch_messages_over_limit_total", 'limit="message-size"') == 2
    assert proxy.metric("sipdispatch_messages_over_limit_total", 'limit="header-count"') == 1
