"""Admin state every replica follows: ``sipdispatch-ctl --dispatcherset NAME set-state dx``
on the real API server, with two proxy replicas carrying calls.

The operator and two Kubernetes-mode proxy replicas run as local processes with the chart's
ServiceAccounts; two sipp gateways behind a selector-less Service (hand-made EndpointSlices)
sit in a test network namespace, as in ``test_operator_gateways.py``. ``sipdispatch-ctl``
runs as a process, as a cluster user (the admin kubeconfig) runs it. What is shown:

* while calls flow through both replicas, ``set-state dx`` takes the gateway out of both:
  how long until each replica serves it DX, and until the last new call reaches it, is
  measured and printed (bound: one second from the command's return);
* the status names the ``spec.adminStates`` entry, seen by both replicas;
* both replicas stopped and started again: the gateway is DX from their first table, and
  no new call reaches it;
* ``set-state ap`` lifts the hold on both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeproc import (
    KubeProxy,
    KubeStack,
    apply,
    destination_states,
    dispatcherset,
    endpoint_slice,
    service,
    wait_for,
)

from kubecluster import KubeCluster, KubeCommandError
from netns import GatewayNet, gateway_net
from sipphelpers import SippCaller, SippGateway, SippLab

pytestmark = [pytest.mark.k8s, pytest.mark.sipp]

__all__ = ["gateway_net"]  # the fixture, imported for these tests

SET = {
    "setId": 1,
    "algorithm": "round-robin",
    "gateways": [{"service": "asterisk", "port": "sip"}],
    "probing": {"interval": 1, "timeout": 0.5, "failureThreshold": 2, "successThreshold": 1},
}
REPLICAS = ("proxy-0", "proxy-1")


class Lab:
    def __init__(self, kube: KubeStack, lab: SippLab, net: GatewayNet, admin: Path) -> None:
        self.kube, self.lab, self.net, self.admin = kube, lab, net, admin

    @property
    def kubectl(self) -> Callable[..., str]:
        return self.kube.kubectl

    def gateway(self, name: str) -> SippGateway:
        return self.lab.gateway(name, ip=self.net.next_address(), netns=self.net.name)

    def caller(self, proxy: KubeProxy, name: str, **kwargs: Any) -> SippCaller:
        return self.lab.caller(proxy.hostport, name=name, local_ip=self.net.host, **kwargs)

    def states(self) -> dict[str, dict[str, Any]]:
        return destination_states(self.kube.status("asterisk"))

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sipdispatch-ctl --dispatcherset asterisk -n NS ARGS`` as the cluster's admin."""
        found = shutil.which("sipdispatch-ctl", path=str(Path(sys.executable).parent))
        command = [found] if found else [sys.executable, "-m", "sipdispatch.proxy.ctl"]
        return subprocess.run(
            [
                *command,
                "--dispatcherset",
                "asterisk",
                "-n",
                self.kube.namespace,
                "--kubeconfig",
                str(self.admin),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def lab(
    *,
    kube_cluster: KubeCluster,
    kube_namespace: str,
    gateway_net: GatewayNet,
    sipp_lab: SippLab,
    tmp_path: Path,
) -> Iterator[Lab]:
    kube = KubeStack.start(
        kube_cluster, kube_namespace, tmp_path / "kube", proxy_ip=gateway_net.host
    )
    try:
        yield Lab(kube, sipp_lab, gateway_net, kube_cluster.kubeconfig)
    finally:
        refused = kube.close()
    assert not refused, kube.logs()


def invites_at(gateway: SippGateway, after: float) -> list[float]:
    """When ``gateway`` received a new call (an INVITE) since ``after`` (Unix time)."""
    return sorted(
        m.time
        for m in gateway.messages()
        if m.direction == "R" and m.method == "INVITE" and m.time >= after
    )


def served_dx_at(proxies: list[KubeProxy], uri: str, timeout: float) -> list[float]:
    """When each replica first serves ``uri`` as DX (Unix time), polled every 10 ms."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(proxies) and time.monotonic() < deadline:
        for index, proxy in enumerate(proxies):
            if index not in seen and proxy.destinations().get(uri) == "DX":
                seen[index] = time.time()
        time.sleep(0.01)
    assert len(seen) == len(proxies), f"DX on {len(seen)} of {len(proxies)} replicas"
    return [seen[i] for i in range(len(proxies))]


def test_set_state_dx_holds_on_every_replica_and_across_restarts(lab: Lab) -> None:
    gw1, gw2 = lab.gateway("gw1"), lab.gateway("gw2")
    apply(
        lab.kubectl,
        lab.kube.namespace,
        service("asterisk"),
        *(
            endpoint_slice(f"asterisk-{g.name}", "asterisk", [g.ip], g.port, pod=g.name)
            for g in (gw1, gw2)
        ),
        dispatcherset("asterisk", SET),
    )
    proxies = [lab.kube.start_proxy(replica) for replica in REPLICAS]
    wait_for(
        "both gateways AP on both replicas",
        lambda: (
            all(lab.states().get(g.uri, {}).get("seenBy") == 2 for g in (gw1, gw2))
            and {lab.states()[g.uri]["state"] for g in (gw1, gw2)} == {"AP"}
        ),
        20,
    )

    # Calls through both replicas; the command comes two seconds in.
    callers = [
        lab.caller(proxy, f"calls-{proxy.replica}", rate=20, calls=140, call_ms=100).start()
        for proxy in proxies
    ]
    time.sleep(2.0)
    started = time.time()
    done = lab.ctl("set-state", "dx", "1", gw1.uri, "--reason", "maintenance")
    returned = time.time()
    assert done.returncode == 0, done.stderr
    assert "held disabled in spec.adminStates" in done.stdout
    dx_at = served_dx_at(proxies, gw1.uri, timeout=5)
    results = [caller.wait() for caller in callers]
    assert all(r.failed == 0 for r in results), [r.summary() for r in results]

    before = invites_at(gw1, 0.0)
    assert [t for t in before if t < started], "gw1 took no call before the command"
    last_new_call = max(before) - returned
    print(
        f"set-state dx: the command took {(returned - started) * 1000:.0f} ms; from its "
        f"return, DX on {REPLICAS[0]} after {(dx_at[0] - returned) * 1000:.0f} ms, on "
        f"{REPLICAS[1]} after {(dx_at[1] - returned) * 1000:.0f} ms; the last new call "
        f"reached gw1 {last_new_call * 1000:.0f} ms after it"
    )
    assert max(dx_at) - returned < 1.0, lab.kube.logs()
    assert last_new_call < 1.0
    assert len(invites_at(gw2, returned + 1.0)) > 40  # the calls went on, all to gw2

    def held_on_both() -> bool:
        dest = lab.states().get(gw1.uri, {})
        return (dest.get("state"), dest.get("seenBy")) == ("DX", 2)

    wait_for("DX seen by both replicas in the status", held_on_both, 10)
    assert lab.states()[gw1.uri]["reason"] == "spec.adminStates[0]: disabled (maintenance)"

    # Both replicas stop; new ones read the hold from their first table.
    for proxy in proxies:
        proxy.stop()
    restarted_at = time.time()
    proxies = [lab.kube.start_proxy(replica) for replica in REPLICAS]
    assert [p.destinations().get(gw1.uri) for p in proxies] == ["DX", "DX"]
    assert [p.destinations().get(gw2.uri) for p in proxies] == ["AP", "AP"]
    after = [
        lab.caller(proxy, f"after-{proxy.replica}", rate=20, calls=20, call_ms=100).run()
        for proxy in proxies
    ]
    assert all(r.successful == 20 for r in after), [r.summary() for r in after]
    assert invites_at(gw1, restarted_at) == []
    assert [p.destinations().get(gw1.uri) for p in proxies] == ["DX", "DX"]

    # ap lifts the hold on both.
    lifted = lab.ctl("set-state", "ap", "1", gw1.uri)
    assert lifted.returncode == 0, lifted.stderr
    wait_for(
        "gw1 AP again on both replicas",
        lambda: [p.destinations().get(gw1.uri) for p in proxies] == ["AP", "AP"],
        5,
    )
    spec = lab.kubectl("get", "dispatcherset", "asterisk", "-n", lab.kube.namespace, "-o", "json")
    assert '"adminStates": []' in spec


def test_an_unknown_state_or_set_is_refused_and_nothing_is_written(lab: Lab) -> None:
    apply(lab.kubectl, lab.kube.namespace, dispatcherset("asterisk", SET))
    bad_state = lab.ctl("set-state", "up", "1", "sip:10.213.0.9:5060")
    assert bad_state.returncode == 1
    assert "unknown state 'up'; expected one of" in bad_state.stderr
    wrong_set = lab.ctl("set-state", "dx", "2", "sip:10.213.0.9:5060")
    assert wrong_set.returncode == 1
    assert "is set 1, not set 2" in wrong_set.stderr
    spec = lab.kubectl("get", "dispatcherset", "asterisk", "-n", lab.kube.namespace, "-o", "json")
    assert "adminStates" not in spec

    # The API server refuses an unknown state written by hand, naming the field.
    patch = '{"spec":{"adminStates":[{"uri":"sip:10.213.0.9","state":"off"}]}}'
    with pytest.raises(KubeCommandError, match=r"spec\.adminStates\[0\]\.state: Unsupported value"):
        lab.kubectl(
            "patch",
            "dispatcherset",
            "asterisk",
            "-n",
            lab.kube.namespace,
            "--type=merge",
            "-p",
            patch,
        )
