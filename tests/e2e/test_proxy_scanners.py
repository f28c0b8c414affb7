"""The common SIP scanners against sipdispatch-proxy, while a legitimate caller places calls.

caller (sipp, 127.0.0.1) and scanners (SIPVicious svmap, svwar, svcrack, and requests with the
User-Agents of sipcli, sip-scan and friendly-scanner) -> sipdispatch (127.0.0.1, default
policy) -> sipp gateways on 127.0.0.2 and 127.0.0.3. Nothing of the scanners may reach a
gateway: every message a gateway received (its sipp message log) belongs to a call of the
legitimate caller, and every one of those calls completes. The same scan against a proxy with
``--no-request-policy`` does reach the gateways, which shows what the check would see.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy, send_datagrams

from sipphelpers import (
    HARNESS_PING_PREFIX,
    HarnessError,
    SippGateway,
    SippLab,
    dispatch_problems,
    routing_report,
)

pytestmark = pytest.mark.sipp

RATE = 20  # calls/s
CALLS = 200


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / f"sipvicious_{name}"
    if not path.exists():
        raise HarnessError(f"{path} is missing: install the test extras (hack/bootstrap)")
    return str(path)


def _scans(proxy: SipdispatchProxy) -> list[list[str]]:
    """SIPVicious as an attacker runs it: defaults, plus INVITE where a tool can."""
    port, host = str(proxy.port), proxy.ip
    return [
        [_tool("svmap"), "-p", port, host],  # OPTIONS
        [_tool("svmap"), "-p", port, "-m", "INVITE", "-e", "100", host],
        [_tool("svwar"), "-p", port, "-e", "100-199", host],  # REGISTER
        [_tool("svwar"), "-p", port, "-m", "INVITE", "-e", "100-120", host],
        [_tool("svcrack"), "-p", port, "-u", "100", "-r", "1-30", host],
    ]


def _scan(proxy: SipdispatchProxy, workdir: Path) -> list[subprocess.Popen[bytes]]:
    workdir.mkdir(parents=True, exist_ok=True)
    running = []
    for number, argv in enumerate(_scans(proxy)):
        with (workdir / f"scan{number}.log").open("wb") as log:  # the child keeps its own
            running.append(
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
            )
    return running


def _scanner_invites(proxy: SipdispatchProxy) -> list[bytes]:
    """INVITEs with the User-Agents of the scanners SIPVicious does not stand for."""
    out = []
    for n, agent in enumerate(["sipcli/v1.8", "sip-scan", "friendly-scanner", "VaxSIPUserAgent"]):
        out.append(
            (
                f"INVITE sip:100@{proxy.ip}:{proxy.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-scan{n};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:scanner@127.0.0.1>;tag=s{n}\r\n"
                f"To: <sip:100@{proxy.ip}>\r\n"
                f"Call-ID: scanner-{n}@127.0.0.1\r\n"
                "CSeq: 1 INVITE\r\n"
                f"User-Agent: {agent}\r\n"
                "Contact: <sip:scanner@127.0.0.1:9>\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
    return out


def _foreign(gateways: list[SippGateway], legitimate: set[str]) -> dict[str, set[str]]:
    """Per gateway, the Call-IDs it received that are not the legitimate caller's."""
    return {
        gw.name: {
            m.call_id
            for m in gw.messages()
            if m.direction == "R"
            and m.call_id not in legitimate
            and not m.call_id.startswith(HARNESS_PING_PREFIX)
        }
        for gw in gateways
    }


def test_scanners_reach_no_gateway_and_calls_go_on(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gateways = [sipp_lab.gateway("gw1"), sipp_lab.gateway("gw2")]
    proxy = SipdispatchProxy(
        tmp_path / "proxy", gateways, extra_args=["--probe-mode", "off"]
    ).start()
    proxies.append(proxy)
    caller = sipp_lab.caller(proxy.hostport, rate=RATE, calls=CALLS, call_ms=500).start()
    scans = _scan(proxy, tmp_path / "scans")
    answers = send_datagrams(proxy.ip, proxy.port, _scanner_invites(proxy))
    for scan in scans:
        scan.wait(timeout=120)
    result = caller.wait()

    # Dropped without a word: the scan learns nothing. (Only answers to the scanners' own
    # Call-IDs count: the socket's ephemeral port may once have been another test's caller's,
    # whose late responses still arrive.)
    assert [a for a in answers if b"Call-ID: scanner-" in a] == []
    foreign = _foreign(gateways, caller.call_ids())
    assert foreign == {"gw1": set(), "gw2": set()}, proxy.log()[-3000:]
    refused = proxy.metric('sipdispatch_requests_refused_total{reason="user-agent",route=""}')
    print(f"scanner requests dropped: {refused:.0f}; legitimate calls: {result.successful}")
    assert refused >= len(scans) + 4
    report = routing_report(gateways, caller.call_ids())
    problems = dispatch_problems(result, report, calls=CALLS)
    assert not problems, "\n".join(problems) + "\n" + proxy.log()[-3000:]


def test_without_the_policy_the_same_scan_reaches_the_gateways(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gateways = [sipp_lab.gateway("gw1"), sipp_lab.gateway("gw2")]
    proxy = SipdispatchProxy(
        tmp_path / "proxy",
        gateways,
        extra_args=["--probe-mode", "off", "--no-request-policy"],
    ).start()
    proxies.append(proxy)
    send_datagrams(proxy.ip, proxy.port, _scanner_invites(proxy))
    scan = [_tool("svwar"), "-p", str(proxy.port), "-m", "INVITE", "-e", "100-105", proxy.ip]
    subprocess.run(scan, capture_output=True, timeout=120, check=False, cwd=tmp_path)
    reached = set().union(*_foreign(gateways, set()).values())
    # The four INVITEs, and svwar's first (it stops when a gateway answers any extension).
    assert {f"scanner-{n}@127.0.0.1" for n in range(4)} < reached, reached
