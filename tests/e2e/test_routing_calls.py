"""Routes with real sipp callers and gateways: inbound to Asterisk, outbound to carriers.

Two sets behind one proxy, each gateway on its own loopback address: asterisk (set 1) and
carriers (set 2). Callers send from a carrier's address, from an Asterisk's address and from
an address nobody trusts, as the boxes themselves would. Every call must be accounted for by
the gateways' logs: carrier calls to a DID of the asterisk range reach the asterisk set only;
Asterisk's calls reach the carriers only; a carrier call to another number would go back into
the carriers' own set (the default set) and is refused; the stranger gets 403. Every refusal
is counted in /metrics by reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy

from sipphelpers import SippCaller, SippGateway, SippLab, Transport, routing_report

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

CALLS = 20
CONFIG = """\
defaultSet: 2
sets:
  - id: 1                      # asterisk
    destinations: [{{uri: "{ast1}"}}, {{uri: "{ast2}"}}]
  - id: 2                      # carriers
    destinations: [{{uri: "{car1}"}}, {{uri: "{car2}"}}]
routes:
  - name: carriers-to-asterisk
    match: {{source: ["set:2"], requestUser: "^\\\\+?4930"}}
    set: 1
  - name: asterisk-to-carriers
    match: {{source: ["set:1"]}}
    set: 2
"""


def calls_from(
    sipp_lab: SippLab, proxy: SipdispatchProxy, ip: str, number: str, transport: Transport
) -> SippCaller:
    caller = sipp_lab.caller(
        proxy.hostport,
        transport=transport,
        local_ip=ip,
        rate=CALLS,
        calls=CALLS,
        call_ms=200,
        recv_timeout_ms=3000,
        extra_args=["-s", number],
    )
    caller.run()
    return caller


def answered_by(gateways: list[SippGateway], caller: SippCaller) -> dict[str, int]:
    """How many of ``caller``'s calls each gateway answered; every one answered exactly once,
    its ACK and BYE at the gateway that answered it."""
    report = routing_report(gateways, caller.call_ids())
    assert not report.problems(), report.problems()
    mine = caller.call_ids()
    assert len(mine) == CALLS
    return {
        gw.name: sum(cid in mine for cid, name in report.answered_by.items() if name == gw.name)
        for gw in gateways
    }


def final_statuses(caller: SippCaller) -> set[int]:
    """The final responses the caller got to its INVITEs."""
    return {
        m.status
        for m in caller.messages()
        if m.direction == "R" and m.cseq_method == "INVITE" and (m.status or 0) >= 200
    }


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_inbound_and_outbound_calls_take_their_routes_and_nothing_hairpins(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    transport: Transport,
    proxy_build: list[str] | None,
) -> None:
    ast1, ast2, car1, car2 = (
        sipp_lab.gateway(name, transport=transport) for name in ("ast1", "ast2", "car1", "car2")
    )
    text = CONFIG.format(ast1=ast1.uri, ast2=ast2.uri, car1=car1.uri, car2=car2.uri)
    proxy = SipdispatchProxy(tmp_path / "proxy", [], config_text=text, command=proxy_build).start()
    proxies.append(proxy)
    everyone = [ast1, ast2, car1, car2]

    inbound = calls_from(sipp_lab, proxy, car1.ip, "+4930123456", transport)
    split = answered_by(everyone, inbound)
    assert split == {"ast1": CALLS // 2, "ast2": CALLS // 2, "car1": 0, "car2": 0}

    outbound = calls_from(sipp_lab, proxy, ast2.ip, "004989555", transport)
    split = answered_by(everyone, outbound)
    assert split == {"ast1": 0, "ast2": 0, "car1": CALLS // 2, "car2": CALLS // 2}

    # A carrier calling a number outside the asterisk range: the default set is its own.
    hairpin = calls_from(sipp_lab, proxy, car2.ip, "004989555", transport)
    stranger = calls_from(sipp_lab, proxy, "127.0.0.99", "+4930123456", transport)
    for refused in (hairpin, stranger):
        assert final_statuses(refused) == {403}
        assert all(gw.calls().keys().isdisjoint(refused.call_ids()) for gw in everyone)

    refusals = 'sipdispatch_requests_refused_total{reason="%s",route=""}'
    assert proxy.metric(refusals % "hairpin") == len(hairpin.call_ids()) == CALLS
    assert proxy.metric(refusals % "untrusted-source") == len(stranger.call_ids()) == CALLS
    assert "refused INVITE" in proxy.log()
