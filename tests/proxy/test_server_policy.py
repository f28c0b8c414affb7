"""The request policy of a running proxy: its own names come from where it listens, and a
request for another host is answered 403 over a real socket."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from loopback import free_udp_port

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.proxy.server import ProxyServer
from sipdispatch.proxy.settings import ProxySettings
from sipdispatch.proxy.tables import FileTableSource

OFF = ProbingSpec.model_validate({"mode": "off"})


async def _started(tmp_path: Path, listen: str, **options: object) -> ProxyServer:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.2:5060\n")
    source = FileTableSource(table, kamailio_format=True, algorithm=4, default_set=None)
    settings = ProxySettings(listen=(listen,), control=None, probing=OFF, **options)  # type: ignore[arg-type]
    server = ProxyServer(source, settings)
    await server.start()
    return server


def _domains(server: ProxyServer) -> frozenset[str] | None:
    assert server.engine is not None
    return server.engine.core.settings.policy.domains


async def test_a_listener_on_one_address_answers_for_it_and_the_advertised_name(
    tmp_path: Path,
) -> None:
    server = await _started(
        tmp_path, f"udp:127.0.0.1:{free_udp_port()}", advertise="sip.example.com:5060"
    )
    try:
        assert _domains(server) == {"127.0.0.1", "sip.example.com"}
    finally:
        await server.close()


async def test_a_listener_on_every_address_answers_for_this_hosts_names(tmp_path: Path) -> None:
    server = await _started(tmp_path, f"udp:0.0.0.0:{free_udp_port()}")
    try:
        domains = _domains(server)
        assert domains is not None
        assert {"127.0.0.1", "::1", "localhost", socket.gethostname().lower()} <= domains
    finally:
        await server.close()


async def test_a_request_for_another_host_is_answered_403_over_udp(tmp_path: Path) -> None:
    port = free_udp_port()
    server = await _started(tmp_path, f"udp:127.0.0.1:{port}")
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        me = sock.getsockname()[1]
        invite = (
            "INVITE sip:100@relay.example.net SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-relay1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n"
            "To: <sip:100@relay.example.net>\r\n"
            "Call-ID: relay1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        try:
            await loop.sock_sendto(sock, invite, ("127.0.0.1", port))
            answers = []
            while not any(b" 403 " in a.split(b"\r\n")[0] for a in answers):
                answers.append(await asyncio.wait_for(loop.sock_recv(sock, 65535), 5))
        finally:
            await server.close()
    assert answers[-1].startswith(b"SIP/2.0 403 Not Relaying\r\n")
    assert not any(b" 100 " in a.split(b"\r\n")[0] for a in answers)  # refused before a 100
