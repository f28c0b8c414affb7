"""TLS end to end: a real proxy on loopback with a tls listener, TLS callers (Python's ``ssl``),
sipp gateways over UDP and small TLS gateways, certificates from a test CA made here.

What it shows: a TLS caller's call through to a UDP gateway and back, hung up from either side;
the certificate replaced on disk while a call runs (new connections get the new one, the call
on the old connection ends normally, a broken pair is refused); a ``sips:`` Request-URI goes
over TLS only, or is refused; per-set verification of the gateways' certificates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import free_udp_port, until
from prometheus_client import generate_latest
from tlspeers import SigningCa, TlsCaller, TlsGateway, header, status_of

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.proxy.server import ProxyServer
from sipdispatch.proxy.settings import ProxySettings
from sipdispatch.proxy.tables import FileTableSource
from sipphelpers import SippLab, free_port, sipp_binary

Start = Callable[..., Coroutine[Any, Any, "Running"]]
#: calls up on old connections while the certificate changes
IN_PROGRESS = 10


class Running:
    def __init__(self, server: ProxyServer, ca: SigningCa, cert: Path, key: Path) -> None:
        self.server = server
        self.ca = ca
        self.cert = cert
        self.key = key

    @property
    def tls_port(self) -> int:
        return self.server.bound["tls"][1]

    async def caller(self) -> TlsCaller:
        return await TlsCaller.connect("127.0.0.1", self.tls_port, self.ca)

    def metric(self, name: str) -> float:
        for line in generate_latest(self.server.registry).decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    servers: list[ProxyServer] = []
    ca = SigningCa(tmp_path / "ca")

    async def make(
        sets: str, extra: str = "", probing: str = "  mode: 'off'\n", **options: Any
    ) -> Running:
        cert, key, _ = ca.issue_files("proxy", names=("127.0.0.1", "localhost"))
        config = tmp_path / "sipdispatch.yaml"
        config.write_text(f"probing:\n{probing}{extra}sets:\n{sets}")
        source = FileTableSource(config, kamailio_format=False, algorithm=8, default_set=None)
        udp, tls = free_udp_port(), free_port()
        server = ProxyServer(
            source,
            ProxySettings(
                listen=(f"udp:127.0.0.1:{udp}", f"tls:127.0.0.1:{tls}"),
                control=None,
                tls_cert=cert,
                tls_key=key,
                answer_timeout=2.0,
                **options,
            ),
        )
        await server.start()
        servers.append(server)
        return Running(server, ca, cert, key)

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[SippLab]:
    sipp_binary()  # fails (not skips) at once without sipp
    sipp = SippLab(tmp_path / "sipp")
    try:
        yield sipp
    finally:
        sipp.close()


def _udp_set(*uris: str) -> str:
    return "  - id: 1\n    destinations:\n" + "".join(f"      - uri: {u}\n" for u in uris)


@pytest.mark.sipp
async def test_a_tls_caller_reaches_a_udp_gateway_and_either_side_hangs_up(
    start: Start, lab: SippLab
) -> None:
    answers = lab.gateway("gw-answers")
    hangs_up = lab.gateway("gw-hangs-up", scenario="uas_bye")
    # set 1 is the default set; set 2 takes Request-URIs with user "hangup"
    run = await start(
        _udp_set(answers.uri) + _udp_set(hangs_up.uri).replace("id: 1", "id: 2"),
        "defaultSet: 1\nroutes:\n  - match: {requestUser: '^hangup$'}\n    set: 2\n",
    )
    caller = await run.caller()
    try:
        began = time.monotonic()
        dialog = await caller.call("sip:bob@127.0.0.1", "tls-call-1")
        setup = time.monotonic() - began
        assert any(";transport=tls" in rr for rr in dialog.route_set), dialog.route_set
        assert await caller.bye(dialog) == 200  # caller hangs up: TLS in, UDP out, 200 back

        dialog2 = await caller.call("sip:hangup@127.0.0.1", "tls-call-2")
        bye = await caller.answer_bye()  # the gateway hangs up: UDP in, TLS out
        assert header(bye, "Call-ID") == "tls-call-2"
        print(f"TLS caller -> UDP gateway: call set up in {setup * 1000:.1f} ms, BYE both ways")
        await until(lambda: "tls-call-2" in hangs_up.calls(), within=5.0)
        assert hangs_up.calls()["tls-call-2"].got_invite
        assert dialog2.call_id == "tls-call-2"
    finally:
        await caller.close()
    calls = answers.calls()
    assert "tls-call-1" in calls
    assert calls["tls-call-1"].got_invite


async def test_a_new_certificate_serves_new_connections_and_calls_in_progress_go_on(
    start: Start, tmp_path: Path
) -> None:
    gateway = await TlsGateway(*run_gateway_cert(tmp_path)).start()
    try:
        run = await start(
            "  - id: 1\n    tls: {verify: false}\n    destinations:\n"
            f"      - uri: {gateway.uri()}\n"
        )
        # calls up on connections opened before the change
        early = [await run.caller() for _ in range(IN_PROGRESS)]
        old_serial = early[0].serial
        expiry = run.metric("sipdispatch_tls_certificate_expiry_timestamp_seconds")
        dialogs = [await c.call("sip:bob@127.0.0.1", f"early-{i}") for i, c in enumerate(early)]
        # TLS connections count as TCP's: the callers' in, the one to the gateway out
        assert run.metric('sipdispatch_tcp_connections{direction="inbound"}') == IN_PROGRESS
        assert run.metric('sipdispatch_tcp_connections{direction="outbound"}') == 1

        cert, key, new_serial = run.ca.issue("proxy-renewed", names=("127.0.0.1",), days=30)
        replaced = time.monotonic()
        run.key.write_bytes(key)  # as a mounted Secret changes: both files, one after the other
        run.cert.write_bytes(cert)
        # new calls keep coming, each on a new connection, until one gets the new certificate
        second: TlsCaller | None = None
        during = 0
        while time.monotonic() - replaced < 6.0:
            caller = await run.caller()
            dialog = await caller.call("sip:bob@127.0.0.1", f"during-{during}")
            assert await caller.bye(dialog) == 200
            during += 1
            if caller.serial == new_serial:
                second = caller
                break
            assert caller.serial == old_serial
            await caller.close()
            await asyncio.sleep(0.05)
        assert second is not None, "new connections never got the new certificate"
        seen_after = time.monotonic() - replaced
        assert second.peer_cert["subject"] == ((("commonName", "proxy-renewed"),),)
        assert run.metric("sipdispatch_tls_certificate_expiry_timestamp_seconds") > expiry

        # the calls set up before the change end normally on their connections (old certificate)
        assert {c.serial for c in early} == {old_serial} != {new_serial}
        assert [await c.bye(d) for c, d in zip(early, dialogs, strict=True)] == [200] * IN_PROGRESS
        print(
            f"new certificate served {seen_after:.2f} s after the files changed; {during} calls "
            f"placed meanwhile, {IN_PROGRESS} calls in progress ended with BYE 200"
        )

        # a broken pair (the key of another certificate) is refused: the renewed one serves on
        _, other_key, _ = run.ca.issue("other")
        run.key.write_bytes(other_key)
        watch = run.server._certificate
        assert watch is not None
        assert watch.check() is False
        third = await run.caller()
        assert third.serial == new_serial
        for caller in (*early, second, third):
            await caller.close()
    finally:
        await gateway.close()


def run_gateway_cert(tmp_path: Path) -> tuple[Path, Path]:
    ca = SigningCa(tmp_path / "gateway-ca", name="gateway CA")
    cert, key, _ = ca.issue_files("gateway")
    return cert, key


async def test_a_sips_request_goes_over_tls_only_or_is_refused(
    start: Start, tmp_path: Path, make_peer: Any
) -> None:
    udp_gateway = await make_peer()
    run = await start(_udp_set(udp_gateway.uri))
    caller = await run.caller()
    try:
        await caller.request(
            caller.build(
                "INVITE",
                "sips:bob@127.0.0.1",
                call_id="sips-1",
                cseq=1,
                from_tag="t1",
                to="<sips:bob@x>",
                route="",
            )
        )
        answer = await caller.final()
        assert answer.startswith("SIP/2.0 503 No TLS Destination For SIPS URI"), answer
        assert not [m for m in udp_gateway.received if m.startswith("INVITE")]
    finally:
        await caller.close()

    gateway = await TlsGateway(*run_gateway_cert(tmp_path)).start()
    try:
        run = await start(
            "  - id: 1\n    algorithm: priority\n    tls: {verify: false}\n    destinations:\n"
            f"      - {{uri: {udp_gateway.uri}, priority: 10}}\n"
            f"      - uri: {gateway.uri('sips')}\n"
        )
        caller = await run.caller()
        dialog = await caller.call("sips:bob@127.0.0.1", "sips-2")
        assert await caller.bye(dialog) == 200
        assert [header(m, "Call-ID") for m in gateway.requests("INVITE")] == ["sips-2"]
        assert header(gateway.requests("INVITE")[0], "Via").startswith("SIP/2.0/TLS ")
        assert not [m for m in udp_gateway.received if m.startswith("INVITE")]
        # a sip: request still takes the preferred UDP gateway
        await caller.request(
            caller.build(
                "INVITE",
                "sip:bob@127.0.0.1",
                call_id="sip-3",
                cseq=1,
                from_tag="t3",
                to="<sip:bob@x>",
                route="",
            )
        )
        await until(lambda: any("sip-3" in m for m in udp_gateway.received))
        await caller.close()
    finally:
        await gateway.close()


@pytest.mark.parametrize("verify", [True, False])
async def test_verification_per_set_fails_over_from_an_untrusted_gateway(
    start: Start, tmp_path: Path, verify: bool
) -> None:
    trusted_ca = SigningCa(tmp_path / "trusted", name="trusted CA")
    untrusted = await TlsGateway(*run_gateway_cert(tmp_path)).start()  # its own CA
    trusted_pair = trusted_ca.issue_files("trusted", names=("trusted.test",))[:2]
    trusted = await TlsGateway(*trusted_pair).start()
    try:
        run = await start(
            "  - id: 1\n    algorithm: priority\n"
            f"    tls: {{verify: {str(verify).lower()}, caFile: '{trusted_ca.cert_file}',"
            " serverName: trusted.test}\n"
            "    destinations:\n"
            f"      - {{uri: {untrusted.uri()}, priority: 10}}\n"
            f"      - uri: {trusted.uri()}\n"
        )
        caller = await run.caller()
        began = time.monotonic()
        dialog = await caller.call("sip:bob@127.0.0.1", f"verify-{verify}")
        took = time.monotonic() - began
        assert await caller.bye(dialog) == 200
        await caller.close()
        answered_by = trusted if verify else untrusted
        assert [header(m, "Call-ID") for m in answered_by.requests("INVITE")] == [
            f"verify-{verify}"
        ]
        if verify:
            assert not untrusted.requests("INVITE")  # the handshake failed: nothing sent
            assert trusted.server_names == ["trusted.test"]  # SNI: the set's server name
        assert untrusted.server_names == ["trusted.test"]
        print(f"verify={verify}: call answered in {took * 1000:.1f} ms")
        assert took < 1.5  # a failed handshake fails the branch at once, not by timeout
    finally:
        await untrusted.close()
        await trusted.close()


async def test_a_tls_listener_without_a_certificate_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "sipdispatch.yaml"
    config.write_text("sets: []\n")
    source = FileTableSource(config, kamailio_format=False, algorithm=4, default_set=None)
    server = ProxyServer(
        source, ProxySettings(listen=(f"tls:127.0.0.1:{free_port()}",), control=None)
    )
    with pytest.raises(Exception, match="tls listener needs --tls-cert"):
        await server.start()
    await server.close()


async def test_probes_reach_tls_gateways_and_an_untrusted_one_goes_down(
    start: Start, tmp_path: Path
) -> None:
    trusted_ca = SigningCa(tmp_path / "trusted", name="trusted CA")
    untrusted = await TlsGateway(*run_gateway_cert(tmp_path)).start()
    trusted = await TlsGateway(*trusted_ca.issue_files("trusted")[:2]).start()
    try:
        run = await start(
            f"  - id: 1\n    tls: {{caFile: '{trusted_ca.cert_file}'}}\n    destinations:\n"
            f"      - uri: {untrusted.uri()}\n      - uri: {trusted.uri()}\n",
            probing="  interval: 0.2\n  timeout: 0.15\n  failureThreshold: 2\n"
            "  successThreshold: 2\n",
        )
        table = run.server.table
        assert table is not None

        def state(uri: str) -> str:
            return table.find(1, uri).runtime.health.code

        await until(
            lambda: state(untrusted.uri()) == "IP" and len(trusted.requests("OPTIONS")) >= 2
        )
        assert state(trusted.uri()) == "AP"
        assert not untrusted.requests("OPTIONS")  # no probe crossed a failed handshake
    finally:
        await untrusted.close()
        await trusted.close()


@pytest.mark.parametrize("attrs", ["", "tls_verify=0"])
async def test_a_dispatcher_list_sets_verification_in_a_destinations_attrs(
    tmp_path: Path, attrs: str
) -> None:
    ca = SigningCa(tmp_path / "ca")
    cert, key, _ = ca.issue_files("proxy")
    gateway = await TlsGateway(*run_gateway_cert(tmp_path)).start()  # not signed by a known CA
    table = tmp_path / "dispatcher.list"
    table.write_text(f"1 {gateway.uri()} 0 0 {attrs}\n")
    source = FileTableSource(table, kamailio_format=True, algorithm=4, default_set=None)
    server = ProxyServer(
        source,
        ProxySettings(
            listen=(f"tls:127.0.0.1:{free_port()}",),
            control=None,
            tls_cert=cert,
            tls_key=key,
            probing=ProbingSpec(mode="off"),
        ),
    )
    await server.start()
    try:
        run = Running(server, ca, cert, key)
        caller = await run.caller()
        await caller.request(
            caller.build(
                "INVITE",
                "sip:bob@127.0.0.1",
                call_id="list-1",
                cseq=1,
                from_tag="l1",
                to="<sip:bob@127.0.0.1>",
                route="",
            )
        )
        answer = await caller.final()
        await caller.close()
        if attrs:
            assert answer.startswith("SIP/2.0 200 "), answer
            assert len(gateway.requests("INVITE")) == 1
        else:  # verified against the system's CAs: the handshake fails, nothing is sent
            assert status_of(answer) in {408, 503}, answer  # the core's answer for a failed hop
            assert not gateway.requests("INVITE")
    finally:
        await server.close()
        await gateway.close()


async def test_the_yaml_config_names_the_certificate_when_no_flag_does(tmp_path: Path) -> None:
    ca = SigningCa(tmp_path / "ca")
    cert, key, serial = ca.issue_files("from-yaml")
    config = tmp_path / "sipdispatch.yaml"
    port = free_port()
    config.write_text(
        f"listen: ['tls:127.0.0.1:{port}']\ntls:\n  certFile: '{cert}'\n  keyFile: '{key}'\n"
        "probing: {mode: 'off'}\nsets: []\n"
    )
    source = FileTableSource(config, kamailio_format=False, algorithm=4, default_set=None)
    server = ProxyServer(source, ProxySettings(control=None))
    await server.start()
    try:
        caller = await TlsCaller.connect("127.0.0.1", port, ca)
        assert caller.serial == serial
        await caller.close()
    finally:
        await server.close()
