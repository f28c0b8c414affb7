"""EndpointSlices drive running proxies: the operator and a Kubernetes-mode proxy as local
processes with the chart's ServiceAccounts, a real API server, real sipp gateways and calls.

A selector-less Service ``asterisk`` gets one hand-made EndpointSlice per sipp gateway (each on
its own port: a slice has one port list). The gateways run in a network namespace the test
makes (``tests/netns.py``), each on its own address there (10.213.k.2, .3, ...): the API server
refuses loopback addresses in EndpointSlices, and test traffic may target nothing but loopback
and the test's own namespace. The proxies listen on the root namespace's end of the veth
(10.213.k.1), where the callers send. What is shown:

* both gateways AP in the DispatcherSet status, with the latency the proxy's probes measure;
* an endpoint marked terminating turns DR (proxy and status): no new call reaches it while
  the BYE of a call it answered before still does;
* a third endpoint added while calls flow gets calls within a second (measured and printed);
* a stopped gateway turns IP within the probing thresholds, and a DestinationDown Event says so.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
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
from sipphelpers import RoutingReport, SippCaller, SippGateway, SippLab, routing_report

pytestmark = [pytest.mark.k8s, pytest.mark.sipp]

PROBING = {
    "interval": 1,
    "timeout": 0.5,
    "jitter": 0.1,
    "failureThreshold": 2,
    "successThreshold": 1,
}
SET = {
    "setId": 1,
    "algorithm": "round-robin",
    "gateways": [{"service": "asterisk", "port": "sip"}],
    "probing": PROBING,
    "drainGraceSeconds": 5,
}


__all__ = ["gateway_net"]  # the fixture, imported for these tests


@dataclass
class Stack:
    kube: KubeStack
    lab: SippLab
    net: GatewayNet  # gateways inside, proxies and callers on its host end
    api: Any  # kubernetes.client.ApiClient (admin): quicker than kubectl for timed changes

    @property
    def namespace(self) -> str:
        return self.kube.namespace

    @property
    def kubectl(self) -> Callable[..., str]:
        return self.kube.kubectl

    def gateway(self, name: str) -> SippGateway:
        """A sipp gateway inside the test network, on its next address."""
        return self.lab.gateway(name, ip=self.net.next_address(), netns=self.net.name)

    def caller(self, proxy: KubeProxy, name: str, **kwargs: Any) -> SippCaller:
        """A sipp caller on the test network's host end, calling ``proxy``."""
        return self.lab.caller(proxy.hostport, name=name, local_ip=self.net.host, **kwargs)

    def slice_for(self, gateway: SippGateway, **conditions: Any) -> dict[str, Any]:
        return endpoint_slice(
            f"asterisk-{gateway.name}",
            "asterisk",
            [gateway.ip],
            gateway.port,
            pod=gateway.name,
            **conditions,
        )

    def start_proxy(self) -> KubeProxy:
        return self.kube.start_proxy()

    def status(self) -> dict[str, Any]:
        return self.kube.status("asterisk")

    def states(self) -> dict[str, dict[str, Any]]:
        return destination_states(self.status())

    def logs(self) -> str:
        return self.kube.logs()


@pytest.fixture
def stack(
    *,
    kube_cluster: KubeCluster,
    kube_namespace: str,
    kube_api: Callable[..., Any],
    gateway_net: GatewayNet,
    sipp_lab: SippLab,
    tmp_path: Path,
) -> Iterator[Stack]:
    kube = KubeStack.start(
        kube_cluster, kube_namespace, tmp_path / "kube", proxy_ip=gateway_net.host
    )
    try:
        yield Stack(kube, sipp_lab, gateway_net, kube_api())
    finally:
        refused = kube.close()
    assert not refused, kube.logs()


def answered_where(report: RoutingReport, call_ids: set[str]) -> dict[str, int]:
    """Which gateway answered how many of ``call_ids``."""
    return dict(Counter(report.answered_by[c] for c in call_ids if c in report.answered_by))


def wait_both_up_with_latency(stack: Stack, gateways: list[SippGateway]) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        states = stack.states()
        up = [states.get(gw.uri, {}) for gw in gateways]
        if all(d.get("state") == "AP" and d.get("latencyMs") is not None for d in up):
            return states
        return None

    return wait_for("every gateway AP with a latency in the status", ready, 20)  # type: ignore[no-any-return]


def test_endpoint_slices_drive_a_running_proxy(stack: Stack) -> None:
    gw1, gw2, gw3 = (stack.gateway(name) for name in ("gw1", "gw2", "gw3"))
    apply(
        stack.kubectl,
        stack.namespace,
        service("asterisk"),
        stack.slice_for(gw1),
        stack.slice_for(gw2),
        dispatcherset("asterisk", SET),
    )
    proxy = stack.start_proxy()

    # Both active, with the latency the proxy measured, and origins naming the pods.
    states = wait_both_up_with_latency(stack, [gw1, gw2])
    status = stack.status()
    print("status:", {uri: (d["state"], d["latencyMs"], d["origin"]) for uri, d in states.items()})
    assert states[gw1.uri]["origin"] == "pod/gw1"
    assert (status["replicas"], status["upTotal"]) == (1, "2/2")
    assert condition(status, "Ready")["status"] == "True"
    assert set(proxy.destinations()) == {gw1.uri, gw2.uri}

    # A call in progress on one gateway; that gateway's endpoint starts terminating.
    long = stack.caller(proxy, "long", rate=1, calls=1, call_ms=6000).start()

    def answering() -> SippGateway | None:
        return next((gw for gw in (gw1, gw2) if any(c.answered for c in gw.calls().values())), None)

    draining = wait_for("the long call to be answered", answering, 10)
    other = gw2 if draining is gw1 else gw1
    apply(
        stack.kubectl,
        stack.namespace,
        stack.slice_for(draining, ready=False, serving=True, terminating=True),
    )
    wait_for("the proxy to drain it", lambda: proxy.destinations().get(draining.uri) == "DR", 5)
    wait_for(
        "DR in the status", lambda: stack.states().get(draining.uri, {}).get("state") == "DR", 10
    )
    assert stack.states()[draining.uri]["reason"] == "endpoint terminating"

    short = stack.caller(proxy, "short", rate=20, calls=20, call_ms=100)
    result = short.run()
    report = routing_report([gw1, gw2], short.call_ids())
    assert result.successful == 20, result.summary()
    assert answered_where(report, short.call_ids()) == {other.name: 20}, report
    assert report.bye_missing == [long.call_ids().pop()]  # the long call is not over yet

    long_result = long.wait()
    assert long_result.successful == 1, long_result.summary()
    long_report = routing_report([gw1, gw2], long.call_ids())
    assert answered_where(long_report, long.call_ids()) == {draining.name: 1}
    assert not long_report.problems(), long_report  # its BYE reached the draining gateway

    # A third endpoint while calls flow: how long until calls reach it.
    steady = stack.caller(proxy, "steady", rate=50, calls=250, call_ms=100)
    steady.start()
    time.sleep(1.0)
    from kubernetes import client  # noqa: PLC0415 (only these tests pay for the import)

    kept = proxy.destination(other.uri)
    added_at = time.time()
    client.DiscoveryV1Api(stack.api).create_namespaced_endpoint_slice(
        stack.namespace, stack.slice_for(gw3)
    )
    wait_for("the proxy to serve gw3", lambda: gw3.uri in proxy.destinations(), 5, 0.01)
    in_table = time.time() - added_at
    # A table change is a delta: what the proxy learned about the others stays.
    after = proxy.destination(other.uri)
    assert after["changedAt"] == kept["changedAt"]  # the same instant in every answer
    assert after["latency"]["samples"] >= kept["latency"]["samples"] > 0
    steady_result = steady.wait()
    invites = [m.time for m in gw3.messages() if m.direction == "R" and m.method == "INVITE"]
    assert invites, "no call reached the third gateway"
    first_call = min(invites) - added_at
    print(
        f"endpoint added -> in the proxy's table after {in_table * 1000:.0f} ms, "
        f"first call at the new gateway after {first_call * 1000:.0f} ms"
    )
    assert first_call < 1.0, stack.logs()
    assert steady_result.failed == 0, steady_result.summary()
    steady_report = routing_report([gw1, gw2, gw3], steady.call_ids())
    where = answered_where(steady_report, steady.call_ids())
    assert draining.name not in where
    assert sum(where.values()) == 250
    assert not steady_report.problems()
    wait_for("gw3 in the status", lambda: stack.states().get(gw3.uri, {}).get("state") == "AP", 10)


def test_a_stopped_gateway_turns_inactive_with_an_event(stack: Stack) -> None:
    gw1, gw2 = (stack.gateway(name) for name in ("gw1", "gw2"))
    apply(
        stack.kubectl,
        stack.namespace,
        service("asterisk"),
        stack.slice_for(gw1),
        stack.slice_for(gw2),
        dispatcherset("asterisk", SET),
    )
    stack.start_proxy()
    stack.kube.start_proxy("proxy-1")  # a second replica, reporting on its own
    wait_both_up_with_latency(stack, [gw1, gw2])
    wait_for("both replicas in the status", lambda: stack.status().get("replicas") == 2, 10)
    reports = json.loads(
        stack.kubectl("get", "dispatcherreports", "-n", stack.namespace, "-o", "json")
    )["items"]
    assert sorted(r["spec"]["replica"] for r in reports) == ["proxy-0", "proxy-1"]

    stopped_at = time.monotonic()
    gw2.stop()
    # Two failed probes (1 s apart, +10 % jitter, 0.5 s timeout), then a report (coalesced
    # over 0.5 s) and a status write (at most every 0.5 s).
    bound = (
        PROBING["failureThreshold"] * PROBING["interval"] * (1 + PROBING["jitter"])
        + PROBING["timeout"]
        + 2.0
    )
    wait_for(
        "IP in the status, seen by both replicas",
        lambda: (
            stack.states().get(gw2.uri, {}).get("state") == "IP"
            and stack.states()[gw2.uri]["seenBy"] == 2
        ),
        bound,
        0.05,
    )
    elapsed = time.monotonic() - stopped_at
    print(f"gateway stopped -> IP in the status after {elapsed:.2f} s (bound {bound:.1f} s)")
    status = stack.status()
    assert condition(status, "Ready")["status"] == "True"  # gw1 still takes calls
    assert condition(status, "Degraded")["reason"] == "DestinationsDown"
    assert status["upTotal"] == "1/2"
    down = wait_for(
        "a DestinationDown event",
        lambda: events(stack.kubectl, stack.namespace, "DestinationDown"),
        5,
    )
    assert down[0]["type"] == "Warning"
    assert down[0]["involvedObject"]["name"] == "asterisk"
    assert gw2.uri in down[0]["message"]
    assert "-> IP on" in down[0]["message"]

    # A replica that stops takes its report along: the status counts one replica again.
    stack.kube.proxies[1].stop()
    wait_for("one replica left in the status", lambda: stack.status().get("replicas") == 1, 5)
