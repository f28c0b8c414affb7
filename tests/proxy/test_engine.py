"""The engine over real loopback sockets: messages in, sends out, events up, timers armed."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import pytest
from loopback import free_udp_port, until

from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig
from sipdispatch.proxy.core import CoreSettings, Outbox, Signer
from sipdispatch.proxy.engine import LOG_BURST, TIMER_TICK, Engine
from sipdispatch.proxy.events import (
    BranchFailed,
    BranchStarted,
    CoreEvent,
    HandlingFailed,
    MessageRejected,
    ProbeCompleted,
)
from sipdispatch.proxy.transport.tcp import TcpTransport
from sipdispatch.proxy.transport.udp import open_udp
from sipdispatch.sip import codec
from sipdispatch.sip.message import Request, Response
from sipdispatch.sip.transaction import Timers


class Box:
    """A SIP box on a loopback UDP socket: keeps what it receives, answers when told."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.uri = f"sip:{self.address[0]}:{self.address[1]}"

    async def next(self, within: float = 2.0) -> Request | Response:
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), within)
        return codec.parse(data)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)


def _table(*uris: str) -> DestinationTable:
    dests = tuple(Destination.create(1, uri) for uri in uris)
    return DestinationTable.build(TableConfig((SetConfig(1, dests),)), None, 0.0)


def _invite(caller: Box, call_id: str) -> bytes:
    host, port = caller.address
    return (
        f"INVITE sip:svc@{host} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:a@x>;tag=1\r\nTo: <sip:svc@x>\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


Lab = tuple[Engine, tuple[str, int], list[CoreEvent]]


@pytest.fixture
def boxes() -> Iterator[Callable[[], Box]]:
    made: list[Box] = []

    def make() -> Box:
        made.append(Box())
        return made[-1]

    yield make
    for box in made:
        box.sock.close()


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., asyncio.Future[Lab]]]:
    engines: list[Engine] = []

    async def make(table: DestinationTable, **settings: object) -> Lab:
        port = free_udp_port()
        core = CoreSettings(
            local={"udp": ("127.0.0.1", port), "tcp": ("127.0.0.1", port)},
            advertise=("127.0.0.1", port),
            timers=Timers(t1=0.02, t2=0.16, t4=0.2),
            **settings,  # type: ignore[arg-type]
        )
        events: list[CoreEvent] = []

        def on_events(batch: Sequence[CoreEvent]) -> None:
            events.extend(batch)

        engine = Engine(core, table, Signer(b"k" * 32), on_events)
        engine.udp = await open_udp("127.0.0.1", port, engine)
        engine.tcp = TcpTransport(engine, on_error=engine.connection_failed)
        engines.append(engine)
        return engine, engine.udp.local_address, events

    yield make  # type: ignore[misc]
    for engine in engines:
        engine.close()
        if engine.tcp is not None:
            await engine.tcp.close()
        if engine.udp is not None:
            engine.udp.close()


async def test_a_request_is_answered_and_forwarded_and_its_events_handed_up(
    make_engine: Callable[..., asyncio.Future[Lab]], boxes: Callable[[], Box]
) -> None:
    caller, gateway = boxes(), boxes()
    _, address, events = await make_engine(_table(gateway.uri))
    caller.send(_invite(caller, "e1"), address)
    trying = await caller.next()
    assert isinstance(trying, Response)
    assert trying.status == 100
    forwarded = await gateway.next()
    assert isinstance(forwarded, Request)
    assert (forwarded.method, forwarded.call_id) == ("INVITE", "e1")
    assert [(e.destination, e.call_id) for e in events if isinstance(e, BranchStarted)] == [
        (DestinationKey.parse(1, gateway.uri), "e1")
    ]


async def test_the_armed_timer_retransmits_and_fails_over_without_any_traffic(
    make_engine: Callable[..., asyncio.Future[Lab]], boxes: Callable[[], Box]
) -> None:
    caller, silent, answering = boxes(), boxes(), boxes()
    _, address, events = await make_engine(_table(silent.uri, answering.uri), answer_timeout=0.15)
    caller.send(_invite(caller, "e2"), address)
    first = await silent.next()
    again = await silent.next()  # Timer A, fired by the engine's loop.call_at
    assert isinstance(first, Request)
    assert isinstance(again, Request)
    assert first.headers.first_value("via") == again.headers.first_value("via")
    moved = await answering.next(within=1.0)  # the answer timeout moved the call on
    assert isinstance(moved, Request)
    assert moved.call_id == "e2"
    assert (DestinationKey.parse(1, silent.uri), 408) in [
        (e.destination, e.status) for e in events if isinstance(e, BranchFailed)
    ]


async def test_timers_due_within_one_tick_run_in_one_wake_up_and_never_early(
    make_engine: Callable[..., asyncio.Future[Lab]], boxes: Callable[[], Box]
) -> None:
    caller, silent = boxes(), boxes()
    engine, address, _ = await make_engine(_table(silent.uri))
    loop = asyncio.get_running_loop()
    wake_ups: list[float] = []
    on_timer = engine.core.on_timer

    def counted(now: float) -> Outbox:
        wake_ups.append(now)
        return on_timer(now)

    engine.core.on_timer = counted  # type: ignore[method-assign]
    first = loop.time()
    for n in range(10):  # 1 ms apart: each INVITE's Timer A comes due a little after the last's
        caller.send(_invite(caller, f"tick{n}"), address)
        await asyncio.sleep(0.001)
    span = loop.time() - first
    seen: Counter[str] = Counter()
    while len(seen) < 10 or min(seen.values()) < 2:  # each INVITE and its first retransmission
        request = await silent.next()
        assert isinstance(request, Request)
        seen[request.call_id] += 1
    assert 1 <= len(wake_ups) <= span / TIMER_TICK + 2
    armed = engine._timer_at
    deadline = engine.core.next_deadline()
    assert armed is not None
    assert deadline is not None
    assert deadline <= armed < deadline + TIMER_TICK  # never early, at most a tick late


async def test_a_malformed_request_is_answered_reported_and_logged(
    make_engine: Callable[..., asyncio.Future[Lab]],
    boxes: Callable[[], Box],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller = boxes()
    _, address, events = await make_engine(_table("sip:127.0.0.9:5060"))
    bad = _invite(caller, "e3").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    with caplog.at_level(logging.WARNING, logger="sipdispatch.proxy.engine"):
        caller.send(bad, address)
        answer = await caller.next()
    assert isinstance(answer, Response)
    assert answer.status == 400
    assert [e.status for e in events if isinstance(e, MessageRejected)] == [400]
    assert "rejected request (Call-ID e3)" in caplog.text


async def test_a_swapped_table_serves_the_next_request(
    make_engine: Callable[..., asyncio.Future[Lab]], boxes: Callable[[], Box]
) -> None:
    caller, old, new = boxes(), boxes(), boxes()
    engine, address, _ = await make_engine(_table(old.uri))
    engine.swap_table(_table(new.uri))
    caller.send(_invite(caller, "e4"), address)
    forwarded = await new.next()
    assert isinstance(forwarded, Request)
    assert forwarded.call_id == "e4"


async def test_a_probe_result_arrives_as_an_event(
    make_engine: Callable[..., asyncio.Future[Lab]], boxes: Callable[[], Box]
) -> None:
    gateway = boxes()
    table = _table(gateway.uri)
    engine, address, events = await make_engine(table)
    target = table.get_set(1).targets[0]
    probe_id = engine.probe(engine.hop_for(target), "sip:lb@x", 1.0)
    options = await gateway.next()
    assert isinstance(options, Request)
    lines = options.to_bytes().decode().split("\r\n")
    copied = [
        line for line in lines if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    gateway.send(
        ("SIP/2.0 200 OK\r\n" + "\r\n".join(copied) + "\r\nContent-Length: 0\r\n\r\n").encode(),
        address,
    )
    await until(lambda: any(isinstance(e, ProbeCompleted) for e in events))
    [result] = [e for e in events if isinstance(e, ProbeCompleted)]
    assert (result.probe_id, result.destination, result.status) == (probe_id, target.identity, 200)


async def test_a_tcp_destination_that_cannot_be_reached_fails_over_at_once(
    make_engine: Callable[..., asyncio.Future[Lab]], boxes: Callable[[], Box]
) -> None:
    caller, answering = boxes(), boxes()
    refused = free_udp_port()  # nothing listens on TCP there either, most likely
    _, address, events = await make_engine(
        _table(f"sip:127.0.0.1:{refused};transport=tcp", answering.uri), answer_timeout=30.0
    )
    caller.send(_invite(caller, "e5"), address)
    moved = await answering.next(within=2.0)  # long before the 30 s answer timeout
    assert isinstance(moved, Request)
    assert moved.call_id == "e5"
    assert [e.status for e in events if isinstance(e, BranchFailed)] == [503]


async def test_a_failure_of_the_core_is_survived_counted_and_logged_sanitised(
    make_engine: Callable[..., asyncio.Future[Lab]],
    boxes: Callable[[], Box],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller, gateway = boxes(), boxes()
    engine, address, events = await make_engine(_table(gateway.uri))
    real = engine.core.receive

    def receive(data: bytes, source: tuple[str, int], transport: str, now: float) -> object:
        # A stand-in for a bug of the core: no real input is known to make it raise any more.
        if b"X-Bug" in data:
            raise IndexError("bug\r\nFORGED LOG LINE")
        return real(data, source, transport, now)

    engine.core.receive = receive  # type: ignore[method-assign, assignment]
    buggy = _invite(caller, "bug").replace(b"Max-Forwards", b"X-Bug: 1\r\nMax-Forwards")
    with caplog.at_level(logging.WARNING, logger="sipdispatch.proxy.engine"):
        for _ in range(LOG_BURST + 20):
            caller.send(buggy, address)
        caller.send(_invite(caller, "after-udp"), address)
        trying = await caller.next()
        assert isinstance(trying, Response)
        assert (trying.status, trying.call_id) == (100, "after-udp")
        # over TCP the connection survives the failure and serves the next request
        assert engine.tcp is not None
        reader, writer = await asyncio.open_connection(*await engine.tcp.listen("127.0.0.1", 0))
        writer.write(buggy.replace(b"UDP", b"TCP") + _invite(caller, "after-tcp"))
        framer = codec.StreamFramer()
        answers: list[bytes] = []
        while not answers:
            answers += framer.feed(await asyncio.wait_for(reader.read(65535), 2.0))
        writer.close()
        await writer.wait_closed()
    answer = codec.parse(answers[0], datagram=False)
    assert isinstance(answer, Response)
    assert (answer.status, answer.call_id) == (100, "after-tcp")
    failed = [e for e in events if isinstance(e, HandlingFailed)]
    assert len(failed) == LOG_BURST + 21
    assert failed[0] == HandlingFailed("message", "IndexError: bug\\x0d\\x0aFORGED LOG LINE")
    records = [r for r in caplog.records if "failed, dropped" in r.getMessage()]
    assert len(records) == LOG_BURST  # rate-limited: not one per datagram
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in records)


async def test_a_tcp_gateway_that_resets_is_failed_over_at_once_not_at_the_answer_timeout(
    make_engine: Callable[..., asyncio.Future[Lab]], boxes: Callable[[], Box]
) -> None:
    caller, answering = boxes(), boxes()
    reset_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # SO_LINGER 0: a RST
        reset_at.append(loop.time())

    server = await asyncio.start_server(resetting, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    table = _table(f"sip:{host}:{port};transport=tcp", answering.uri)
    _, address, events = await make_engine(table, answer_timeout=5.0)
    caller.send(_invite(caller, "e5"), address)
    await caller.next()  # 100 Trying
    moved = await answering.next(within=1.0)
    arrived = loop.time()
    assert isinstance(moved, Request)
    assert moved.call_id == "e5"
    assert arrived - reset_at[0] < 0.1
    assert [e.status for e in events if isinstance(e, BranchFailed)] == [503]
    server.close()
    await server.wait_closed()


async def test_a_tcp_request_offering_an_alias_has_its_connection_registered_under_it(
    make_engine: Callable[..., asyncio.Future[Lab]],
) -> None:
    engine, address, _ = await make_engine(_table("sip:127.0.0.9:5060"))
    assert engine.tcp is not None
    host, port = await engine.tcp.listen(*address)  # TCP on the core's own port
    reader, writer = await asyncio.open_connection(host, port)
    alias = ("127.0.0.1", free_udp_port())  # where the caller says it listens
    writer.write(
        (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {alias[0]}:{alias[1]};alias;branch=z9hG4bK-alias1\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:lb@x>\r\nCall-ID: alias-1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    assert answer.startswith(b"SIP/2.0 200 ")  # over the connection, as ever
    assert alias in engine.tcp.connections
    engine.tcp.send(alias, b"OPTIONS sip:a@x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    assert request.startswith(b"OPTIONS sip:a@x ")  # the alias leads to the same connection
    writer.close()
    await writer.wait_closed()
