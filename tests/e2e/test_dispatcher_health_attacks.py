"""Health under attack from one unauthenticated host, with sipp callers and gateways on
loopback, on the development install and on the compiled build.

* **Refused INVITEs.** The gateways refuse calls to one number with 503 (a trunk that cannot
  route it); one INVITE to that number fails over across both gateways. With default settings
  a reply proves a gateway alive: three such INVITEs, then one a second beside 300 legitimate
  calls, leave both gateways ``AP`` and fail no legitimate call.
* **Callers hanging up.** With 4xx failover on (and 4xx counted against destinations), callers
  cancelling while their calls ring get 487s from the gateways: nothing fails over, no
  gateway leaves ``AP``.
* **Forged probe replies.** A dead gateway's probes are seen on the wire, and 200s are forged
  for them (right branch and Call-ID) from another address and from another port, plus blind
  guesses of counted branches: the gateway stays ``IP``; replies from its own address are
  what bring it back.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy, StateWatcher

from sipphelpers import SippGateway, SippLab, Transport

pytestmark = pytest.mark.sipp

BLOCKED = ["-s", "blocked"]  # the number the gateways refuse with 503


def refused(gateway: SippGateway) -> int:
    """INVITEs this gateway refused with 503."""
    return sum(call.rejected_with == 503 for call in gateway.calls().values())


def invites(gateway: SippGateway) -> int:
    return sum(call.got_invite for call in gateway.calls().values())


def test_refused_invites_take_no_gateway_down_and_fail_no_legitimate_call(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    proxy_build: list[str] | None,
) -> None:
    gw1 = sipp_lab.gateway("gw1", scenario="uas_refuse_blocked")
    gw2 = sipp_lab.gateway("gw2", scenario="uas_refuse_blocked")
    # Default settings.
    proxy = SipdispatchProxy(tmp_path / "proxy", [gw1, gw2], command=proxy_build).start()
    proxies.append(proxy)

    # The three-INVITE attack: each INVITE is refused by both gateways (failover on 5xx).
    attack = sipp_lab.caller(
        proxy.hostport, name="attack3", scenario="uac_refused", rate=3, calls=3, extra_args=BLOCKED
    ).run()
    after_three = [proxy.destination(gw.uri)["state"] for gw in (gw1, gw2)]
    three_refusals = (refused(gw1), refused(gw2))
    print(
        f"\n3-INVITE attack: {attack.successful} of 3 INVITEs answered 503 to the attacker, "
        f"refused by the gateways {three_refusals}; states after: {after_three}"
    )
    assert attack.successful == 3, attack.summary()
    assert three_refusals == (3, 3)
    assert after_three == ["AP", "AP"]

    # 300 legitimate calls at 20 calls/s beside one attacker INVITE a second.
    calls = 300
    caller = sipp_lab.caller(proxy.hostport, rate=20, calls=calls, call_ms=500)
    attacker = sipp_lab.caller(
        proxy.hostport,
        name="attacker",
        scenario="uac_refused",
        rate=1,
        calls=16,
        extra_args=BLOCKED,
    )
    with StateWatcher(proxy, gw1.uri) as watch1, StateWatcher(proxy, gw2.uri) as watch2:
        started = time.time()
        attacker.start()
        result = caller.run()
        attacked = attacker.wait(timeout=60)
    states = (watch1.states(started), watch2.states(started))
    refusals = (refused(gw1) - three_refusals[0], refused(gw2) - three_refusals[1])
    no_destination = proxy.metric("sipdispatch_no_destination_total")
    print(
        f"beside 1 attacker INVITE/s ({attacked.successful} answered 503, refused by the "
        f"gateways {refusals}): {result.created} legitimate calls attempted, "
        f"{result.successful} succeeded, {result.failed} failed; states seen gw1 {states[0]}, "
        f"gw2 {states[1]}; 503 No Destination answered {no_destination:g} times\n"
        f"{result.summary()}"
    )
    assert result.created == calls
    assert result.failed == 0, result.summary()
    assert result.successful == calls
    assert attacked.successful == 16, attacked.summary()
    assert min(refusals) >= 16  # every attacker INVITE reached both gateways
    assert states == (["AP"], ["AP"])
    assert no_destination == 0


CANCEL_CONFIG = """\
sets:
  - id: 1
    algorithm: round-robin
    destinations:
      - uri: {gw1}
      - uri: {gw2}
failover:
  codes: ["4xx", "5xx"]
probing:
  interval: 0.5
  timeout: 0.4
  passiveCodes: ["4xx", "5xx"]
"""


def test_callers_cancelling_while_ringing_take_no_gateway_down(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    proxy_build: list[str] | None,
) -> None:
    """4xx failover and 4xx marking on, the strictest settings: a 487 still counts for nothing,
    and a cancelled call is never failed over."""
    gw1 = sipp_lab.gateway("gw1", scenario="uas_ring")
    gw2 = sipp_lab.gateway("gw2", scenario="uas_ring")
    config = CANCEL_CONFIG.format(gw1=gw1.uri, gw2=gw2.uri)
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [gw1, gw2], config_text=config, command=proxy_build
    ).start()
    proxies.append(proxy)
    calls = 20
    caller = sipp_lab.caller(
        proxy.hostport, scenario="uac_cancel", rate=10, calls=calls, call_ms=300
    )
    with StateWatcher(proxy, gw1.uri) as watch1, StateWatcher(proxy, gw2.uri) as watch2:
        started = time.time()
        result = caller.run()
        time.sleep(1.0)  # a probe round after the last 487
    states = (watch1.states(started), watch2.states(started))
    reached = (invites(gw1), invites(gw2))
    cancelled = sum(call.rejected_with == 487 for gw in (gw1, gw2) for call in gw.calls().values())
    failovers = sum(
        proxy.metric(f'sipdispatch_failovers_total{{set="1",uri="{gw.uri}"}}') for gw in (gw1, gw2)
    )
    print(
        f"\n{calls} callers cancelling while ringing (4xx failover and marking on): "
        f"{result.successful} cancelled calls completed, {result.failed} failed; INVITEs per "
        f"gateway {reached}, 487s sent {cancelled}, failovers {failovers:g}; states seen gw1 "
        f"{states[0]}, gw2 {states[1]}\n{result.summary()}"
    )
    assert result.successful == calls, result.summary()
    assert sum(reached) == calls  # one INVITE per call: no cancelled call failed over
    assert cancelled == calls
    assert failovers == 0
    assert states == (["AP"], ["AP"])


class ProbeForger:
    """The attacker: sees the probes sent to a dead gateway's address (it listens there) and
    answers each with 200s from elsewhere; it also sends 200s for the counted branches a
    proxy might use (``z9hG4bKsdP1``, ``P2``, ...), blind."""

    def __init__(self, gateway: SippGateway, forger_ip: str) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listener.bind((gateway.ip, gateway.port))
        self.listener.settimeout(0.1)
        self.elsewhere = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.elsewhere.bind((forger_ip, 0))
        self.other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other_port.bind((gateway.ip, 0))
        self.probes_seen = 0
        self.forged = 0
        self.answer_from_own_address = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._blind = 1

    def __enter__(self) -> ProbeForger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in (self.listener, self.elsewhere, self.other_port):
            sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, proxy = self.listener.recvfrom(65535)
            except TimeoutError:
                continue
            if not data.startswith(b"OPTIONS "):
                continue
            self.probes_seen += 1
            answer = ok_for(data)
            if self.answer_from_own_address:
                self.listener.sendto(answer, proxy)
                continue
            for sock in (self.elsewhere, self.other_port):
                sock.sendto(answer, proxy)
                self.forged += 1
            for _ in range(5):  # blind: what a counter would have given
                guess = f"z9hG4bKsdP{self._blind:x}".encode()
                self._blind += 1
                self.elsewhere.sendto(with_branch(answer, guess), proxy)


def ok_for(options: bytes) -> bytes:
    """A 200 for an OPTIONS: its Via, From, Call-ID and CSeq, its To with a tag."""
    head = options.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    lines = [b"SIP/2.0 200 OK"]
    for line in head:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq"):
            lines.append(line)
        elif name in (b"to", b"t"):
            lines.append(line + b";tag=forged")
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def with_branch(message: bytes, branch: bytes) -> bytes:
    start = message.index(b"branch=") + len(b"branch=")
    end = start
    while end < len(message) and message[end : end + 1] not in (b";", b"\r", b",", b" "):
        end += 1
    return message[:start] + branch + message[end:]


def test_forged_probe_replies_do_not_bring_a_dead_gateway_back(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    proxy_build: list[str] | None,
) -> None:
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    # One probe answered would be enough to come back (success threshold 1): the worst case.
    args = ["--probe-interval", "0.5", "--probe-timeout", "0.4"]
    args += ["--failure-threshold", "2", "--success-threshold", "1"]
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [gw1, gw2], extra_args=args, command=proxy_build
    ).start()
    proxies.append(proxy)
    rejected = 'sipdispatch_probe_replies_rejected_total{set="1"}'
    with StateWatcher(proxy, gw1.uri) as watch:
        watch.wait_for("AP", since=0.0, timeout=5)
        gw1.kill()
        with ProbeForger(gw1, sipp_lab.next_gateway_ip()) as forger:
            dead = watch.wait_for("IP", since=time.time(), timeout=5)
            time.sleep(4.0)  # eight probe rounds, every probe answered by forgers
            forged_states = watch.states(dead.time)
            forged, seen = forger.forged, forger.probes_seen
            time.sleep(0.2)  # the last forged replies reach the proxy
            dropped = proxy.metric(rejected)
            # The control: the same replies from the gateway's own address are believed.
            forger.answer_from_own_address = True
            back = watch.wait_for("AP", since=time.time(), timeout=5)
    print(
        f"\ndead gateway: {seen} probes seen by the attacker, {forged} forged 200s with the "
        f"right branch from other addresses or ports (and {5 * seen} blind guesses), "
        f"{dropped:g} dropped and counted by the proxy; states seen meanwhile {forged_states}; "
        f"replies from its own address: {back.state} ({back.reason})"
    )
    assert seen >= 6
    assert forged_states == ["IP"]
    assert dropped >= forged  # every forged reply with a live branch was dropped, and counted
    assert back.state == "AP"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_probe_replies_from_the_gateway_itself_are_accepted_over_each_transport(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path, transport: Transport
) -> None:
    """The address check is no trouble for real gateways: over TCP the reply comes back on the
    connection the proxy opened, over UDP from the gateway's own port."""
    gw = sipp_lab.gateway("gw", transport=transport)
    args = ["--probe-interval", "0.2", "--probe-timeout", "0.15", "--success-threshold", "1"]
    proxy = SipdispatchProxy(tmp_path / "proxy", [gw], transport=transport, extra_args=args)
    proxies.append(proxy.start())
    time.sleep(2.0)
    state = proxy.destination(gw.uri)
    probes = proxy.metric('sipdispatch_probes_total{result="success",set="1"}')
    dropped = proxy.metric('sipdispatch_probe_replies_rejected_total{set="1"}')
    print(f"\n{transport}: {probes:g} probes answered, {dropped:g} replies dropped, {state}")
    assert state["state"] == "AP"
    assert probes >= 5
    assert dropped == 0
