"""Calls through sipdispatch-proxy with real sipp callers and gateways on loopback.

caller (127.0.0.1) -> sipdispatch (127.0.0.1, dispatcher.list, round-robin) -> sipp gateways
on 127.0.0.2 and 127.0.0.3. Every call must complete, the gateways must share them evenly, and
the ACK and BYE of every call must reach the gateway that answered its INVITE.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy

from sipphelpers import SippLab, Transport, dispatch_problems, percentile, routing_report

pytestmark = pytest.mark.sipp

RATE = 100  # calls/s
SECONDS = 20
CALLS = RATE * SECONDS


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_calls_are_dispatched_evenly_and_bye_reaches_the_answering_gateway(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    transport: Transport,
    proxy_build: list[str] | None,
) -> None:
    gw1 = sipp_lab.gateway("gw1", transport=transport)
    gw2 = sipp_lab.gateway("gw2", transport=transport)
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [gw1, gw2], transport=transport, command=proxy_build
    ).start()
    proxies.append(proxy)
    caller = sipp_lab.caller(
        proxy.hostport, transport=transport, rate=RATE, calls=CALLS, call_ms=1000
    )
    cpu0 = proxy.process.cpu_seconds()

    result = caller.run()

    cpu = proxy.process.cpu_seconds() - cpu0
    report = routing_report([gw1, gw2], caller.call_ids())
    answer = list(caller.answer_delays().values())
    print(
        f"sipdispatch {transport}: {result.successful} calls, split {report.per_gateway}, "
        f"answer p50 {percentile(answer, 50) * 1000:.2f} ms p99 "
        f"{percentile(answer, 99) * 1000:.2f} ms, proxy CPU {cpu:.2f} s, "
        f"retransmissions {result.retransmissions}"
    )
    problems = dispatch_problems(result, report, calls=CALLS)
    assert not problems, "\n".join(problems) + "\n" + proxy.log()[-3000:]
    assert caller.completed_call_ids() == caller.call_ids()
