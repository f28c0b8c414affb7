"""Destinations by DNS name and by SRV, with a real DNS server (dnsmasq on a loopback port,
its own zone) and real sipp gateways on 127.0.0.x:

- calls spread by SRV weight (3:1), counted at the gateways;
- an address removed from the zone leaves the table once its TTL runs out (measured), while
  calls go on and the address that stayed keeps its learned health;
- a name that does not resolve shows IX with the reason in ``sipdispatch-ctl list`` and takes
  no calls, and nothing raises in the proxy.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sipdispatchproc import SipdispatchProxy

from dnsserver import Dnsmasq, dnsmasq_available
from sipphelpers import SippLab, dispatch_problems, free_port, routing_report

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not dnsmasq_available(), reason="needs dnsmasq (hack/bootstrap)"),
]

TTL = 2
FLOOR = 0.5
GRACE = 3.0

PROBING = """\
probing:
  interval: 0.5
  timeout: 0.4
  failureThreshold: 2
  successThreshold: 1
"""


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, ttl=TTL)
    yield server
    server.stop()


def proxy_for(tmp_path: Path, dns: Dnsmasq, config: str, *args: str) -> SipdispatchProxy:
    return SipdispatchProxy(
        tmp_path / "proxy",
        [],
        config_text=config + PROBING,
        extra_args=["--dns-server", dns.server, "--dns-refresh-floor", str(FLOOR), *args],
    ).start()


def listing(proxy: SipdispatchProxy, set_id: int = 1) -> dict[str, Any]:
    for dest_set in proxy.api("/v1/destinations")["sets"]:
        if dest_set["id"] == set_id:
            return dict(dest_set)
    raise AssertionError(f"no set {set_id}")


def wait_until(what: str, check: Any, timeout: float = 10.0) -> float:
    """Poll ``check`` every 50 ms; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def all_up(proxy: SipdispatchProxy, count: int) -> bool:
    dests = listing(proxy)["destinations"]
    return len(dests) == count and all(d["state"] == "AP" for d in dests)


def test_calls_spread_by_srv_weight(sipp_lab: SippLab, tmp_path: Path, dns: Dnsmasq) -> None:
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    dns.write(
        hosts=[(gw1.ip, "a.test"), (gw2.ip, "b.test")],
        srv=[
            ("_sip._udp.svc.test", "a.test", gw1.port, 10, 3),
            ("_sip._udp.svc.test", "b.test", gw2.port, 10, 1),
        ],
    )
    dns.start()
    config = "sets:\n  - id: 1\n    algorithm: weight\n    destinations:\n"
    config += "      - uri: sip:svc.test\n"
    proxy = proxy_for(tmp_path, dns, config)
    try:
        wait_until("both SRV targets up", lambda: all_up(proxy, 2))
        dests = {d["uri"]: d for d in listing(proxy)["destinations"]}
        assert {u: (d["name"], d["weight"]) for u, d in dests.items()} == {
            f"sip:{gw1.ip}:{gw1.port};transport=udp": ("sip:svc.test", 3),
            f"sip:{gw2.ip}:{gw2.port};transport=udp": ("sip:svc.test", 1),
        }
        calls = 200
        caller = sipp_lab.caller(proxy.hostport, rate=50, calls=calls, call_ms=200)
        result = caller.run()
        report = routing_report([gw1, gw2], caller.call_ids())
        problems = dispatch_problems(result, report, calls=calls, even_split=False)
        assert not problems, "\n".join(problems)
        counts = report.per_gateway
        print(f"\ncalls per gateway by SRV weight 3:1: {counts}")
        assert abs(counts["gw1"] - 150) <= 15, counts
        assert abs(counts["gw2"] - 50) <= 15, counts
        listed = proxy.ctl("list")
        assert listed.returncode == 0
        print(listed.stdout)
        assert sum("sip:svc.test" in line for line in listed.stdout.splitlines()) == 2
        assert "Traceback" not in proxy.log()
    finally:
        proxy.stop()


def test_an_address_removed_from_the_zone_leaves_after_its_ttl(
    sipp_lab: SippLab, tmp_path: Path, dns: Dnsmasq
) -> None:
    """It takes no new calls once the TTL runs out, drains (its calls' BYEs still pass) for
    the drain grace, then leaves the table; the address that stayed keeps its health."""
    port = shared_port("127.0.0.10", "127.0.0.11")
    gw1 = sipp_lab.gateway("gw1", ip="127.0.0.10", port=port)
    gw2 = sipp_lab.gateway("gw2", ip="127.0.0.11", port=port)
    dns.write(hosts=[(gw1.ip, "gw.test"), (gw2.ip, "gw.test")])
    dns.start()
    config = "sets:\n  - id: 1\n    algorithm: round-robin\n    destinations:\n"
    config += f"      - uri: sip:gw.test:{port}\n"
    proxy = proxy_for(tmp_path, dns, config, "--dns-drain-grace", str(GRACE))
    try:
        wait_until("both addresses up", lambda: all_up(proxy, 2))
        kept_uri = f"sip:{gw1.ip}:{port};transport=udp"
        gone_uri = f"sip:{gw2.ip}:{port};transport=udp"
        before = proxy.destination(kept_uri)
        calls = 160
        caller = sipp_lab.caller(proxy.hostport, rate=20, calls=calls, call_ms=1000).start()
        time.sleep(1.0)

        dns.write(hosts=[(gw1.ip, "gw.test")])
        dns.reload_hosts()
        removed = time.monotonic()

        def state() -> str | None:
            found = [d for d in listing(proxy)["destinations"] if d["uri"] == gone_uri]
            return str(found[0]["state"]) if found else None

        wait_until("the removed address drains", lambda: state() == "DR", timeout=TTL + 5)
        drained = time.monotonic() - removed
        wait_until("the removed address leaves", lambda: state() is None, timeout=GRACE + 5)
        left = time.monotonic() - removed
        print(
            f"\nremoved from the zone (TTL {TTL} s, floor {FLOOR} s, drain grace {GRACE} s): "
            f"no new calls after {drained:.2f} s, out of the table after {left:.2f} s"
        )
        # asked again when its TTL ran out: at most TTL + floor + a poll of the listing late
        assert drained <= TTL + FLOOR + 1.0
        assert left - drained + 0.5 >= GRACE
        after = proxy.destination(kept_uri)
        assert after["changedAt"] == before["changedAt"]  # the address that stayed: carried
        assert after["latency"]["samples"] >= before["latency"]["samples"]

        result = caller.wait(timeout=60)
        report = routing_report([gw1, gw2], caller.call_ids())
        # every call completes: those on the leaving address too (their BYE passes while it
        # drains), and no new call goes there once it drains
        problems = dispatch_problems(result, report, calls=calls, even_split=False)
        assert not problems, "\n".join(problems)
        print(f"calls per gateway: {report.per_gateway}")
        assert 0 < report.per_gateway["gw2"] <= (TTL + FLOOR + 2) * 20 / 2 + 5
    finally:
        proxy.stop()


def test_an_unresolvable_name_shows_why_and_takes_no_calls(
    sipp_lab: SippLab, tmp_path: Path, dns: Dnsmasq
) -> None:
    gw1 = sipp_lab.gateway("gw1")
    dns.write(hosts=[(gw1.ip, "gw.test")])
    dns.start()
    config = "sets:\n  - id: 1\n    destinations:\n      - uri: sip:nx.test:5060\n"
    config += f"  - id: 2\n    destinations:\n      - uri: sip:gw.test:{gw1.port}\n"
    config += "defaultSet: 1\n"
    proxy = proxy_for(tmp_path, dns, config)
    try:
        names = listing(proxy)["names"]
        assert [(n["uri"], n["state"], n["reason"]) for n in names] == [
            ("sip:nx.test:5060", "failed", "NXDOMAIN")
        ]
        assert listing(proxy)["destinations"] == []
        listed = proxy.ctl("list")
        print("\n" + listed.stdout)
        (line,) = [x for x in listed.stdout.splitlines() if "nx.test" in x]
        assert line.split()[3] == "IX"
        assert line.endswith("dns: NXDOMAIN (nx.test:5060)")

        caller = sipp_lab.caller(proxy.hostport, rate=10, calls=2, call_ms=100)
        result = caller.run()
        assert result.successful == 0  # no address: no call goes anywhere
        assert not any(c.got_invite for c in gw1.calls().values())  # OPTIONS probes only
        assert "ValueError" not in proxy.log()
        assert "Traceback" not in proxy.log()
    finally:
        proxy.stop()


def shared_port(*ips: str) -> int:
    """A port free on each of ``ips`` (a name with a port has one port for all addresses)."""
    for _ in range(20):
        port = free_port(ips[0])
        if all(_free(ip, port) for ip in ips[1:]):
            return port
    raise AssertionError(f"no port free on all of {ips}")


def _free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind((ip, port))
        except OSError:
            return False
    return True
