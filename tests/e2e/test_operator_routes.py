"""Two DispatcherSets serving one proxy, each carrying its match: the operator renders their
routes, a Kubernetes-mode proxy on a real API server follows them, real sipp calls show it.

Set 1 (``asterisk``) takes the DIDs of the asterisk range, set 2 (``carriers``) the national
numbers; both sets take calls, their statuses agree (Ready, what each set takes). A match that
names no set of the proxy makes its set Stalled, naming the field, and the last good routes
keep serving. Gateways run in the test's network namespace (see test_operator_gateways.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeproc import (
    KubeProxy,
    KubeStack,
    apply,
    condition,
    destination_states,
    dispatcherset,
    endpoint_slice,
    service,
    wait_for,
)

from kubecluster import KubeCluster
from netns import GatewayNet, gateway_net
from sipphelpers import SippGateway, SippLab, routing_report

pytestmark = [pytest.mark.k8s, pytest.mark.sipp]

__all__ = ["gateway_net"]  # the fixture, imported for these tests

PROBING = {"interval": 1, "timeout": 0.5, "failureThreshold": 2, "successThreshold": 1}
ASTERISK = {
    "setId": 1,
    "gateways": [{"service": "asterisk", "port": "sip"}],
    "probing": PROBING,
    "match": {"requestUser": "^\\+?4930"},
}
CARRIERS = {
    "setId": 2,
    "gateways": [{"service": "carriers", "port": "sip"}],
    "match": {"requestUser": "^00"},
}


@pytest.fixture
def kube(
    *,
    kube_cluster: KubeCluster,
    kube_namespace: str,
    gateway_net: GatewayNet,
    tmp_path: Path,
) -> Iterator[KubeStack]:
    stack = KubeStack.start(
        kube_cluster, kube_namespace, tmp_path / "kube", proxy_ip=gateway_net.host
    )
    try:
        yield stack
    finally:
        refused = stack.close()
    assert not refused, stack.logs()


def slice_of(service_name: str, gateway: SippGateway) -> dict[str, Any]:
    return endpoint_slice(
        f"{service_name}-{gateway.name}", service_name, [gateway.ip], gateway.port, pod=gateway.name
    )


def calls_to(
    lab: SippLab, net: GatewayNet, proxy: KubeProxy, number: str, gateways: list[SippGateway]
) -> dict[str, int]:
    """Ten calls to ``number``: how many each gateway answered (every one answered once)."""
    caller = lab.caller(
        proxy.hostport,
        local_ip=net.host,
        rate=10,
        calls=10,
        call_ms=100,
        extra_args=["-s", number],
    )
    result = caller.run()
    assert result.successful == 10, result.summary()
    report = routing_report(gateways, caller.call_ids())
    assert not report.problems(), report.problems()
    mine = caller.call_ids()
    return {
        gw.name: sum(c in mine for c, name in report.answered_by.items() if name == gw.name)
        for gw in gateways
    }


def test_two_sets_with_their_matches_both_take_calls(
    kube: KubeStack, gateway_net: GatewayNet, sipp_lab: SippLab
) -> None:
    ast = sipp_lab.gateway("ast", ip=gateway_net.next_address(), netns=gateway_net.name)
    car = sipp_lab.gateway("car", ip=gateway_net.next_address(), netns=gateway_net.name)
    apply(
        kube.kubectl,
        kube.namespace,
        service("asterisk"),
        service("carriers"),
        slice_of("asterisk", ast),
        slice_of("carriers", car),
        dispatcherset("asterisk", ASTERISK),
        dispatcherset("carriers", CARRIERS),
    )
    proxy = kube.start_proxy()
    for name, gateway in (("asterisk", ast), ("carriers", car)):

        def up(name: str = name, gateway: SippGateway = gateway) -> bool:
            status = kube.status(name)
            state = destination_states(status).get(gateway.uri, {}).get("state")
            return state == "AP" and condition(status, "Ready").get("status") == "True"

        wait_for(f"{name} Ready with its gateway AP", up, 20)

    assert calls_to(sipp_lab, gateway_net, proxy, "+4930123456", [ast, car]) == {
        "ast": 10,
        "car": 0,
    }
    assert calls_to(sipp_lab, gateway_net, proxy, "004989555", [ast, car]) == {"ast": 0, "car": 10}

    statuses = {name: kube.status(name) for name in ("asterisk", "carriers")}
    assert {n: s["takes"] for n, s in statuses.items()} == {
        "asterisk": "user~^\\+?4930",
        "carriers": "user~^00",
    }
    assert all(s["upTotal"] == "1/1" for s in statuses.values())
    listed = kube.kubectl("get", "dset", "-n", kube.namespace)
    print(listed)
    assert "user~^\\+?4930" in listed
    assert "user~^00" in listed

    # A match naming a set the proxy does not have: Stalled, and the last good routes serve.
    apply(
        kube.kubectl,
        kube.namespace,
        dispatcherset("carriers", {**CARRIERS, "match": {"source": ["set:9"]}}),
    )

    def invalid() -> dict[str, Any] | None:
        found = condition(kube.status("carriers"), "Stalled")
        return found if found.get("status") == "True" else None

    message = wait_for("carriers Stalled", invalid, 10)["message"]
    assert "spec.match.source[0]: set 9 is not a set of proxy sipdispatch" in message
    assert calls_to(sipp_lab, gateway_net, proxy, "004989555", [ast, car]) == {"ast": 0, "car": 10}
