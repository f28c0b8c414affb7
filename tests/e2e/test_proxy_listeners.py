"""Several listeners in one proxy, with real sipp callers and gateways on loopback.

* A TCP caller to UDP-only gateways whose calls the gateway ends: the proxy records two routes
  (RFC 5658), the gateway's BYE reaches it over UDP and the caller over TCP.
* Two UDP listeners on two loopback addresses, destinations pinned with ``socket=``: what each
  gateway receives comes from the pinned address (Kamailio gateways log the source of every
  request, as their socket saw it).
* IPv4 and IPv6 side by side: a caller of each family calls gateways of each family.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from kamailiogateway import KamailioRecordingGateway
from sipdispatchproc import SipdispatchProxy

from sipphelpers import SippLab, free_port

pytestmark = pytest.mark.sipp

BRIDGED_CALLS = 200
BRIDGED_RATE = 40  # calls/s


def test_a_tcp_callers_calls_are_ended_by_udp_gateways_over_udp(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    proxy_build: list[str] | None,
) -> None:
    traces = [tmp_path / f"gw{n}.messages.log" for n in (1, 2)]
    gateways = [
        sipp_lab.gateway(
            f"gw{n}",
            scenario="uas_hangup",
            extra_args=["-trace_msg", "-message_file", str(traces[n - 1]), "-d", "200"],
        )
        for n in (1, 2)
    ]
    proxy = SipdispatchProxy(tmp_path / "proxy", gateways, command=proxy_build).start()
    proxies.append(proxy)
    port = free_port()
    caller = sipp_lab.caller(
        proxy.hostport,
        transport="tcp",
        scenario="uac_hungup",
        rate=BRIDGED_RATE,
        calls=BRIDGED_CALLS,
        port=port,
        extra_args=["-key", "contact_port", str(port)],
    )
    started = time.monotonic()
    result = caller.run()
    took = time.monotonic() - started

    byes_sent = byes_answered = 0
    for gw in gateways:
        messages = gw.messages()
        byes_sent += len({m.call_id for m in messages if m.direction == "S" and m.method == "BYE"})
        byes_answered += len(
            {
                m.call_id
                for m in messages
                if m.direction == "R" and m.status == 200 and m.cseq_method == "BYE"
            }
        )
    caller_byes = len(
        {m.call_id for m in caller.messages() if m.direction == "R" and m.method == "BYE"}
    )
    # The route set each gateway used for its BYE: ours twice, the UDP one (its side) first.
    route_sets = [
        routes for trace in traces for routes in _sent_bye_routes(trace.read_text(errors="replace"))
    ]
    udp_first = sum(
        1
        for routes in route_sets
        if len(routes) == 2 and "transport=" not in routes[0] and "transport=tcp" in routes[1]
    )
    print(
        f"bridged tcp->udp: {udp_first} BYEs routed by two Record-Routes, the UDP one first; "
        f"{result.successful} of {BRIDGED_CALLS} calls in {took:.1f} s; "
        f"gateways sent {byes_sent} BYEs over UDP, {byes_answered} answered 200; "
        f"the TCP caller got {caller_byes}"
    )
    assert result.successful == BRIDGED_CALLS, result.summary() + proxy.log()[-3000:]
    assert result.failed == 0
    assert byes_sent == byes_answered == caller_byes == BRIDGED_CALLS, proxy.log()[-3000:]
    assert len(route_sets) >= BRIDGED_CALLS
    assert udp_first == len(route_sets), route_sets[:3]


def _sent_bye_routes(trace: str) -> list[list[str]]:
    """The Route values of every BYE in a sipp ``-trace_msg`` log (requests it sent)."""
    found = []
    for block in trace.split("-----------------------------------------------"):
        lines = [line.strip() for line in block.splitlines()]
        first = next((i for i, line in enumerate(lines) if line.startswith("BYE ")), None)
        if first is None or "sent" not in " ".join(lines[:first]):
            continue
        values = [line.partition(":")[2].strip() for line in lines if line.startswith("Route:")]
        found.append([v for value in values for v in re.split(r",\s*(?=<)", value)])
    return found


class RecordingGateway:
    """A UDP gateway that records the source address of every datagram it receives and
    answers statelessly: 200 to INVITE (with the Record-Route it got), BYE and OPTIONS,
    nothing to ACK. A real socket on loopback; stopped by the test."""

    def __init__(self, ip: str) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(0.1)
        self.ip = ip
        self.port = int(self.sock.getsockname()[1])
        #: (source address, method) of every request received
        self.received: list[tuple[tuple[str, int], str]] = []
        #: the Call-ID of every INVITE received
        self.invites: set[str] = set()
        #: the Record-Route values of every INVITE received, top first
        self.record_routes: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def uri(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"sip:{host}:{self.port}"

    def __enter__(self) -> RecordingGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if method.startswith("SIP/"):
                continue
            self.received.append(((str(source[0]), int(source[1])), method))
            if method == "INVITE":
                self.invites.add(_call_id(text))
                self.record_routes.append(_values(text, "record-route"))
            if method != "ACK":
                self.sock.sendto(_answer(text, self.uri), source)

    def sources(self, method: str | None = None) -> set[tuple[str, int]]:
        return {source for source, m in self.received if method in (None, m)}


def _call_id(request: str) -> str:
    return next(iter(_values(request, "call-id", "i")), "")


def _values(request: str, *names: str) -> list[str]:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [
        line.partition(":")[2].strip()
        for line in head
        if line.partition(":")[0].strip().lower() in names
    ]


def _answer(request: str, contact: str) -> bytes:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")
    lines = ["SIP/2.0 200 OK"]
    for line in head[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
            lines.append(line)
        elif name in ("to", "t"):
            lines.append(line if ";tag=" in line else f"{line};tag=gw")
    lines += [f"Contact: <{contact}>", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


PINNED_CALLS = 20


def test_destinations_pinned_with_socket_are_reached_from_that_address(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    second = "127.0.0.9"
    second_port = free_port(second)
    gw1 = KamailioRecordingGateway(tmp_path / "gateways", "gw1", "127.0.0.2").start()
    gw2 = KamailioRecordingGateway(tmp_path / "gateways", "gw2", "127.0.0.3").start()
    try:
        config = (
            "sets:\n- id: 1\n  algorithm: round-robin\n  destinations:\n"
            f"  - {{uri: '{gw1.uri}', socket: 'udp:127.0.0.1:{{PORT}}'}}\n"
            f"  - {{uri: '{gw2.uri}', socket: 'udp:{second}:{second_port}'}}\n"
            "probing: {interval: 1, timeout: 0.5}\n"
        )
        proxy = SipdispatchProxy(
            tmp_path / "proxy",
            [],
            config_text=config,
            extra_args=["--listen", f"udp:{second}:{second_port} advertise 198.51.100.9:5099"],
        ).start()
        proxies.append(proxy)
        caller = sipp_lab.caller(proxy.hostport, rate=20, calls=PINNED_CALLS, call_ms=100)
        result = caller.run()

        print(
            f"pinned: {result.successful} of {PINNED_CALLS} calls; gw1 got "
            f"{len(gw1.received)} requests from {sorted(gw1.sources())}, gw2 "
            f"{len(gw2.received)} from {sorted(gw2.sources())}"
        )
        assert result.successful == PINNED_CALLS, result.summary() + proxy.log()[-3000:]
        assert gw1.sources() == {("127.0.0.1", proxy.port)}
        assert gw2.sources() == {(second, second_port)}
        for gw in (gw1, gw2):
            methods = [m for _, m in gw.received]
            assert methods.count("INVITE") == methods.count("BYE") == PINNED_CALLS // 2
            assert "OPTIONS" in methods  # the probes too
        # gw1 is reached from the listener calls come in on: one route; gw2 from another,
        # which advertises an address of its own: two, gw2's side first
        first = f"<sip:127.0.0.1:{proxy.port};lr;"
        assert all(len(rr) == 1 and rr[0].startswith(first) for rr in gw1.record_routes)
        assert all(
            len(rr) == 2
            and rr[0].startswith("<sip:198.51.100.9:5099;lr;")
            and rr[1].startswith(first)
            for rr in gw2.record_routes
        ), gw2.record_routes[:2]
    finally:
        gw1.stop()
        gw2.stop()


def test_ipv4_and_ipv6_callers_reach_gateways_of_both_families(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    port6 = _free_port6()
    with RecordingGateway("127.0.0.2") as gw4, RecordingGateway("::1") as gw6:
        config = (
            "sets:\n- id: 1\n  algorithm: round-robin\n  destinations:\n"
            f"  - {{uri: '{gw4.uri}'}}\n  - {{uri: '{gw6.uri}'}}\n"
        )
        proxy = SipdispatchProxy(
            tmp_path / "proxy",
            [],
            config_text=config,
            extra_args=["--listen", f"udp:[::1]:{port6}"],
        ).start()
        proxies.append(proxy)
        caller4 = sipp_lab.caller(proxy.hostport, rate=10, calls=4, call_ms=100)
        caller6 = sipp_lab.caller(
            f"[::1]:{port6}",
            name="caller6",
            local_ip="::1",
            port=_free_port6(),
            rate=10,
            calls=4,
            call_ms=100,
        )
        result4 = caller4.run()
        result6 = caller6.run()

        print(
            f"dual stack: IPv4 caller {result4.successful}/4, IPv6 caller {result6.successful}/4;"
            f" gw4 got INVITEs from {sorted(gw4.sources('INVITE'))}, gw6 from"
            f" {sorted(gw6.sources('INVITE'))}"
        )
        assert result4.successful == 4, result4.summary() + proxy.log()[-3000:]
        assert result6.successful == 4, result6.summary() + proxy.log()[-3000:]
        # each gateway is reached from the proxy's listener of its own family
        assert gw4.sources("INVITE") == {("127.0.0.1", proxy.port)}
        assert gw6.sources("INVITE") == {("::1", port6)}
        # and each caller's calls went to both gateways (round-robin over 4 calls each)
        for caller in (caller4, caller6):
            calls = caller.call_ids()
            assert len(calls & gw4.invites) == len(calls & gw6.invites) == 2


def _free_port6() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
            udp.bind(("::1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("::1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on ::1")
