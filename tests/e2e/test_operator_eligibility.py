"""The status counts what the proxy decides: a destination coming up is not up.

A gateway that went inactive and answers probes again is *coming up* (``AX``) until it has
``successThreshold`` successes in a row; the proxy sends it no new call meanwhile (503 to the
caller). The DispatcherReport says so (``eligible: false``), and the DispatcherSet's status
agrees with the calls: ``UP/TOTAL`` 0/1 and not Ready while a call gets 503; 1/1 and Ready,
with a ``DestinationUp`` Event, once calls connect. The operator and a Kubernetes-mode proxy
run as local processes against a real API server, the gateway is sipp in a test network
(``tests/netns.py``), as in ``test_operator_gateways.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    events,
    service,
    wait_for,
)

from kubecluster import KubeCluster
from netns import GatewayNet, gateway_net
from sipphelpers import CallerResult, SippCaller, SippGateway, SippLab

pytestmark = [pytest.mark.k8s, pytest.mark.sipp]

# Down at the first failed probe; coming up for three intervals (about 9 s) once it answers.
PROBING = {
    "interval": 3,
    "timeout": 0.5,
    "jitter": 0,
    "failureThreshold": 1,
    "successThreshold": 4,
}
SET = {
    "setId": 1,
    "gateways": [{"service": "asterisk", "port": "sip"}],
    "probing": PROBING,
}

__all__ = ["gateway_net"]  # the fixture, imported for these tests


@dataclass
class Stack:
    kube: KubeStack
    lab: SippLab
    net: GatewayNet

    def status(self) -> dict[str, Any]:
        return self.kube.status("asterisk")

    def destination(self, uri: str) -> dict[str, Any]:
        return destination_states(self.status()).get(uri, {})

    def reported(self, uri: str) -> dict[str, Any]:
        """What the replica's DispatcherReport says about ``uri``."""
        found = json.loads(
            self.kube.kubectl("get", "dispatcherreports", "-n", self.kube.namespace, "-o", "json")
        )["items"]
        entries = [d for r in found for d in r["spec"]["destinations"] if d["uri"] == uri]
        return entries[0] if entries else {}

    def call(self, proxy: KubeProxy, name: str) -> tuple[CallerResult, SippCaller]:
        caller = self.lab.caller(
            proxy.hostport, name=name, local_ip=self.net.host, rate=1, calls=1, call_ms=100
        )
        return caller.run(), caller


@pytest.fixture
def stack(
    *,
    kube_cluster: KubeCluster,
    kube_namespace: str,
    gateway_net: GatewayNet,
    sipp_lab: SippLab,
    tmp_path: Path,
) -> Iterator[Stack]:
    kube = KubeStack.start(
        kube_cluster, kube_namespace, tmp_path / "kube", proxy_ip=gateway_net.host
    )
    try:
        yield Stack(kube, sipp_lab, gateway_net)
    finally:
        refused = kube.close()
    assert not refused, kube.logs()


def answered_invites(gateway: SippGateway) -> int:
    return sum(1 for m in gateway.messages() if m.direction == "R" and m.method == "INVITE")


def test_a_destination_coming_up_is_not_counted_up(stack: Stack) -> None:
    gw = stack.lab.gateway("gw1", ip=stack.net.next_address(), netns=stack.net.name, start=False)
    slice_ = endpoint_slice("asterisk-gw1", "asterisk", [gw.ip], gw.port, pod="gw1")
    apply(
        stack.kube.kubectl,
        stack.kube.namespace,
        service("asterisk"),
        slice_,
        dispatcherset("asterisk", SET),
    )
    proxy = stack.kube.start_proxy()

    # Not answering: inactive at the first probe, nothing up.
    wait_for("IP in the status", lambda: stack.destination(gw.uri).get("state") == "IP", 15)
    assert stack.status()["upTotal"] == "0/1"

    # Answering again: coming up, below the success threshold.
    gw.start()
    started = time.monotonic()
    wait_for("AX in the proxy", lambda: proxy.destinations().get(gw.uri) == "AX", 10, 0.05)
    reported = wait_for(
        "AX in the report", lambda: (d := stack.reported(gw.uri)).get("state") == "AX" and d, 5
    )
    assert reported["eligible"] is False, reported
    coming_up = wait_for(
        "AX in the status",
        lambda: (s := stack.status()) and destination_states(s)[gw.uri]["state"] == "AX" and s,
        5,
    )
    assert destination_states(coming_up)[gw.uri]["eligible"] is False
    assert coming_up["upTotal"] == "0/1"
    assert condition(coming_up, "Ready")["status"] == "False"
    refused, caller = stack.call(proxy, "while-coming-up")
    assert proxy.destinations().get(gw.uri) == "AX", "came up before the call was over"
    answers = [m.status for m in caller.messages() if m.direction == "R" and m.status]
    assert 503 in answers, answers
    assert refused.successful == 0, refused.summary()
    assert answered_invites(gw) == 0  # the proxy sent it nothing
    assert not events(stack.kube.kubectl, stack.kube.namespace, "DestinationUp")
    window = time.monotonic() - started
    print(f"coming up: report, status and a 503 observed {window:.1f} s after it answered")

    # Up: the proxy selects it, the status says so, calls connect.
    wait_for("AP in the proxy", lambda: proxy.destinations().get(gw.uri) == "AP", 15, 0.05)
    up = wait_for(
        "AP in the status",
        lambda: (s := stack.status()) and destination_states(s)[gw.uri]["state"] == "AP" and s,
        5,
    )
    assert destination_states(up)[gw.uri]["eligible"] is True
    assert up["upTotal"] == "1/1"
    assert condition(up, "Ready")["status"] == "True"
    connected, _ = stack.call(proxy, "once-up")
    assert connected.successful == 1, connected.summary()
    assert answered_invites(gw) == 1
    came_up = wait_for(
        "a DestinationUp event",
        lambda: events(stack.kube.kubectl, stack.kube.namespace, "DestinationUp"),
        5,
    )
    assert "AX -> AP" in came_up[0]["message"], came_up[0]["message"]
