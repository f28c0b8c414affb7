"""What the operator does with specs the schema let through, deletions, and endpoints that go
away, seen from a running Kubernetes-mode proxy (no SIP traffic needed: the proxy's control API
says what it serves).

The proxy still probes what it serves, so every destination is an address test traffic may
target: static destinations are on loopback; endpoints, which the API server refuses on
loopback ("may not be in the loopback range"), are addresses inside a network namespace the
test makes (``tests/netns.py``; nothing listens there, the probes just fail), and the proxy
listens on that network's root-namespace end, 10.213.k.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeproc import (
    TABLE,
    KubeStack,
    apply,
    condition,
    destination_states,
    dispatcherset,
    endpoint_slice,
    events,
    get,
    service,
    wait_for,
)

from kubecluster import KubeCluster
from netns import GatewayNet, gateway_net

__all__ = ["gateway_net"]  # the fixture, imported for these tests

pytestmark = pytest.mark.k8s

# static destinations: probed by the proxy, so on loopback (nothing listens there)
TRUNK = "sip:127.0.0.10:5060"
PSTN = "sip:127.0.0.20:5060"
FIXED = "sip:127.0.0.11"


def _stack(
    cluster: KubeCluster, namespace: str, workdir: Path, proxy_ip: str = "127.0.0.1"
) -> Iterator[KubeStack]:
    stack = KubeStack.start(cluster, namespace, workdir, proxy_ip=proxy_ip)
    try:
        yield stack
    finally:
        refused = stack.close()
    assert not refused, stack.logs()


@pytest.fixture
def kube(kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path) -> Iterator[KubeStack]:
    """Proxies on loopback: for static destinations only."""
    yield from _stack(kube_cluster, kube_namespace, tmp_path / "kube")


@pytest.fixture
def kube_on_net(
    kube_cluster: KubeCluster, kube_namespace: str, gateway_net: GatewayNet, tmp_path: Path
) -> Iterator[KubeStack]:
    """Proxies on the test network's host end: for endpoints inside it."""
    yield from _stack(kube_cluster, kube_namespace, tmp_path / "kube", gateway_net.host)


def table_text(kube: KubeStack) -> str:
    text: str = get(kube.kubectl, kube.namespace, "configmap", TABLE)["data"]["table.yaml"]
    return text


def patch_spec(kube: KubeStack, name: str, spec: dict[str, object]) -> None:
    kube.kubectl(
        "patch",
        "dset",
        name,
        "-n",
        kube.namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
    )


def test_a_bad_spec_keeps_the_last_good_table_and_deleting_a_set_touches_no_other(
    kube: KubeStack,
) -> None:
    apply(
        kube.kubectl,
        kube.namespace,
        dispatcherset("trunks", {"setId": 1, "destinations": [{"uri": TRUNK}]}),
        dispatcherset("pstn", {"setId": 2, "destinations": [{"uri": PSTN}]}),
    )
    proxy = kube.start_proxy()
    wait_for("both sets served", lambda: proxy.sets() == [1, 2], 10)
    good = table_text(kube)

    # Past the schema, refused by the model: one destination written twice.
    patch_spec(
        kube,
        "trunks",
        {"destinations": [{"uri": FIXED}, {"uri": "SIP:127.0.0.11:5060"}]},
    )
    invalid = wait_for(
        "the Stalled condition",
        lambda: (
            condition(kube.status("trunks"), "Stalled").get("status") == "True"
            and condition(kube.status("trunks"), "Stalled")
        ),
        10,
    )
    assert invalid["reason"] == "InvalidSpec"
    assert invalid["message"] == (
        "spec.destinations[1].uri: same destination as destinations[0] "
        "(the table keeps serving generation 1)"
    )
    assert invalid["observedGeneration"] == 2
    warning = wait_for(
        "an InvalidSpec event", lambda: events(kube.kubectl, kube.namespace, "InvalidSpec"), 5
    )
    assert warning[0]["type"] == "Warning"
    assert "spec.destinations[1].uri" in warning[0]["message"]
    assert table_text(kube) == good
    assert set(proxy.destinations()) == {TRUNK, PSTN}  # the last good table keeps serving

    patch_spec(kube, "trunks", {"destinations": [{"uri": FIXED}]})
    wait_for("the fixed spec served", lambda: FIXED in proxy.destinations(), 10)
    assert TRUNK not in proxy.destinations()
    wait_for(
        "Stalled cleared",
        lambda: condition(kube.status("trunks"), "Stalled").get("status") == "False",
        10,
    )

    # A set id already taken: the older DispatcherSet keeps it.
    before = table_text(kube)
    apply(kube.kubectl, kube.namespace, dispatcherset("late", {"setId": 2, "algorithm": 6}))
    late = wait_for(
        "the conflict reported",
        lambda: condition(kube.status("late"), "Stalled").get("message"),
        10,
    )
    assert late == (
        "spec.setId: set 2 is already defined by DispatcherSet pstn (the set is not in the table)"
    )
    assert condition(kube.status("late"), "Ready")["reason"] == "NotInTable"
    assert table_text(kube) == before

    # Deleting a set removes it from the table and changes nothing else. The baseline is a
    # settled status: the replica's report of the fixed destination folded in.
    kube.kubectl("delete", "dset", "late", "-n", kube.namespace)
    wait_for(
        "the fixed destination reported in the status",
        lambda: destination_states(kube.status("trunks")).get(FIXED, {}).get("seenBy") == 1,
        10,
    )
    trunks_before = kube.status("trunks")
    kube.kubectl("delete", "dset", "pstn", "-n", kube.namespace)
    wait_for("set 2 gone from the proxy", lambda: proxy.sets() == [1], 10)
    assert set(proxy.destinations()) == {FIXED}
    assert "id: 2" not in table_text(kube)
    trunks_after = kube.status("trunks")
    assert trunks_after["destinations"] == trunks_before["destinations"]
    assert trunks_after["conditions"] == trunks_before["conditions"]
    # No finalizers: a DispatcherSet deletes at once, with or without the operator.
    assert "finalizers" not in get(kube.kubectl, kube.namespace, "dset", "trunks")["metadata"]


def test_a_gone_endpoint_drains_for_the_grace_then_leaves(
    kube_on_net: KubeStack, gateway_net: GatewayNet
) -> None:
    kube = kube_on_net
    host_a, host_b = gateway_net.next_address(), gateway_net.next_address()
    a, b = f"sip:{host_a}:5091", f"sip:{host_b}:5092"
    apply(
        kube.kubectl,
        kube.namespace,
        service("gw"),
        endpoint_slice("gw-a", "gw", [host_a], 5091, pod="gw-a"),
        endpoint_slice("gw-b", "gw", [host_b], 5092, pod="gw-b"),
        dispatcherset("gw", {"setId": 1, "gateways": [{"service": "gw"}], "drainGraceSeconds": 2}),
    )
    proxy = kube.start_proxy()
    wait_for("both endpoints served", lambda: set(proxy.destinations()) == {a, b}, 10)

    kube.kubectl("delete", "endpointslice", "gw-b", "-n", kube.namespace)
    gone_at = time.monotonic()
    wait_for("the gone endpoint draining", lambda: proxy.destinations().get(b) == "DR", 5, 0.02)
    reason = wait_for(
        "the drain explained in the status",
        lambda: (
            destination_states(kube.status("gw"))
            .get(b, {})
            .get("reason", "")
            .startswith("endpoint gone")
        ),
        5,
    )
    assert reason
    wait_for("the gone endpoint removed", lambda: b not in proxy.destinations(), 6, 0.02)
    drained = time.monotonic() - gone_at
    print(f"endpoint gone -> DR, removed after {drained:.2f} s (grace 2 s)")
    assert drained >= 1.8
    assert set(proxy.destinations()) == {a}
    removed = wait_for(
        "a DestinationRemoved event",
        lambda: events(kube.kubectl, kube.namespace, "DestinationRemoved"),
        5,
    )
    assert b in removed[0]["message"]
