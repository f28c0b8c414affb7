"""An operator that cannot stall silently, and one writer among several operators.

- The API server paused (SIGSTOP) longer than the watch timeout: the operator's /healthz
  fails while it is paused (a kubelet would restart it), passes again after SIGCONT, and a
  change made afterwards is rendered, with no restart. The pause is for a control plane of
  this test's own (the session's is shared by every k8s test).
- Two operators with one Lease: one writes the table and statuses, the other stands by
  (its metrics say so) and takes over when the first stops.

Both run the chart's RBAC (the operator's ServiceAccount, its Lease Role).
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeproc import (
    TABLE,
    OperatorProcess,
    apply,
    dispatcherset,
    get,
    install_chart,
    install_crds,
    wait_for,
)

import kubecluster
from kubecluster import KubeCluster, KubeCommandError
from sipphelpers import free_port

pytestmark = pytest.mark.k8s

LEASE = "sipdispatch-operator"


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _metrics(port: int) -> dict[str, float]:
    """The samples of /metrics as {"name{labels}": value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _uris(kubectl: Callable[..., str], namespace: str) -> list[str]:
    """The destinations of the rendered table (none before it exists)."""
    try:
        table = get(kubectl, namespace, "configmap", TABLE)
    except KubeCommandError:
        return []
    sets = yaml.safe_load(table["data"]["table.yaml"])["sets"]
    return [d["uri"] for s in sets for d in s["destinations"]]


def _trunk(*uris: str) -> dict[str, Any]:
    return dispatcherset("trunks", {"setId": 1, "destinations": [{"uri": u} for u in uris]})


@pytest.fixture
def private_cluster() -> Iterator[KubeCluster]:
    """A control plane of this test's own: pausing it disturbs no other test."""
    cluster = kubecluster.start(owner_pid=os.getpid())
    try:
        yield cluster
    finally:
        kubecluster.stop(cluster)


def test_a_stalled_api_server_fails_liveness_and_the_operator_recovers_by_itself(
    private_cluster: KubeCluster, tmp_path: Path
) -> None:
    cluster, kubectl = private_cluster, private_cluster.kubectl
    namespace = cluster.create_namespace("stall")
    install_crds(kubectl)
    identities = install_chart(cluster, namespace, tmp_path)
    watch_timeout = 3.0
    stall_after = watch_timeout + 10  # the operator's bound: the timeout plus 10 s
    operator = OperatorProcess(
        tmp_path,
        identities.operator,
        namespace,
        "--lease",
        LEASE,
        "--lease-namespace",
        namespace,
        "--watch-timeout",
        str(watch_timeout),
    ).start()
    try:
        apply(kubectl, namespace, _trunk("sip:10.9.0.1:5060"))
        wait_for("the first table", lambda: _uris(kubectl, namespace), 20)
        # Quiet but healthy for longer than the bound: the probe keeps passing (the watches
        # hear a bookmark, a Lease renewal or a new request at least once per timeout).
        quiet_until = time.monotonic() + stall_after + 3
        while time.monotonic() < quiet_until:
            assert _health(operator.health_port) == 200, operator.log()[-3000:]
            time.sleep(1.0)

        apiserver = int((cluster.state_dir / "kube-apiserver.pid").read_text())
        os.kill(apiserver, signal.SIGSTOP)
        paused = time.monotonic()
        try:
            # kopf caches probe results for 10 s: the failure shows within bound + 10 s.
            wait_for(
                "/healthz to fail while the API server is paused",
                lambda: _health(operator.health_port) == 500,
                stall_after + 15,
                interval=0.5,
            )
            noticed = time.monotonic() - paused
            assert noticed > watch_timeout, "not on the first silent watch timeout"
            assert operator.process.running()
        finally:
            os.kill(apiserver, signal.SIGCONT)
        resumed = time.monotonic()
        wait_for("/healthz to pass again", lambda: _health(operator.health_port) == 200, 40, 0.5)
        healthy = time.monotonic() - resumed
        # The watches resumed by themselves: a change made now is rendered.
        changed = time.monotonic()
        apply(kubectl, namespace, _trunk("sip:10.9.0.1:5060", "sip:10.9.0.2:5060"))
        wait_for(
            "the change made after the pause in the table",
            lambda: "sip:10.9.0.2:5060" in _uris(kubectl, namespace),
            60,
            interval=0.2,
        )
        rendered = time.monotonic() - changed
        print(
            f"\npaused for {resumed - paused:.1f}s: /healthz failed {noticed:.1f}s into the "
            f"pause (bound {stall_after:g}s; kopf keeps a passing probe for 10 s); healthy "
            f"{healthy:.1f}s after SIGCONT; a change rendered {rendered:.1f}s after it was made"
        )
        assert operator.process.running(), "recovered without a restart"
        assert "Forbidden" not in operator.log()
    finally:
        operator.stop()


def test_two_operators_one_writer_and_the_other_takes_over(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    kubectl, namespace = kube_cluster.kubectl, kube_namespace
    install_crds(kubectl)
    identities = install_chart(kube_cluster, namespace, tmp_path)
    ports = [free_port(), free_port()]

    def leasing(index: int, port: int) -> OperatorProcess:
        """An operator on the shared Lease, its metrics on ``port``."""
        return OperatorProcess(
            tmp_path,
            identities.operator,
            namespace,
            *("--lease", LEASE, "--lease-namespace", namespace),
            *("--metrics", f"http://127.0.0.1:{port}/metrics"),
            name=f"operator-{index}",
        ).start()

    operators = [leasing(index, port) for index, port in enumerate(ports)]
    try:

        def leader() -> int | None:
            flags = [_metrics(port)["sipdispatch_operator_leader"] for port in ports]
            return flags.index(1.0) if sorted(flags) == [0.0, 1.0] else None

        wait_for("one leader", lambda: leader() is not None, 20)
        first = leader()
        assert first is not None
        apply(kubectl, namespace, _trunk("sip:10.9.0.1:5060"))
        wait_for("the first table", lambda: _uris(kubectl, namespace), 20)
        time.sleep(1.0)  # the status writes that follow
        writes = [_metrics(port) for port in ports]
        table = f'{{namespace="{namespace}",proxy="sipdispatch"}}'
        key = f"sipdispatch_operator_table_writes_total{table}"
        assert writes[first].get(key, 0) >= 1
        assert writes[1 - first].get(key, 0) == 0, "the one that stands by writes nothing"
        assert writes[1 - first].get("sipdispatch_operator_status_writes_total", 0) == 0
        assert writes[first]["sipdispatch_operator_status_writes_total"] >= 1
        lease = get(kubectl, namespace, "lease", LEASE)
        assert lease["spec"]["holderIdentity"].endswith(f"-{operators[first].process.pid}")

        # The leader stops (and releases the Lease): the other takes over and renders.
        stopped = time.monotonic()
        operators[first].stop()
        second = 1 - first
        wait_for(
            "the other operator to lead",
            lambda: _metrics(ports[second])["sipdispatch_operator_leader"] == 1.0,
            20,
        )
        took_over = time.monotonic() - stopped
        apply(kubectl, namespace, _trunk("sip:10.9.0.1:5060", "sip:10.9.0.3:5060"))
        wait_for(
            "the new leader's table",
            lambda: "sip:10.9.0.3:5060" in _uris(kubectl, namespace),
            20,
        )
        after = _metrics(ports[second])
        assert after[key] >= 1
        assert after['sipdispatch_operator_reconciles_total{result="ok"}'] >= 1
        assert after["sipdispatch_operator_last_success_timestamp_seconds"] > time.time() - 30
        print(f"\nthe second operator led {took_over:.1f}s after the first stopped")
        assert took_over < 5, "a released Lease is taken at the next attempt (every 2 s)"

        # A leader that dies (SIGKILL: nothing released) is replaced once its Lease was not
        # renewed for the lease duration (15 s), as the one standing by observed it.
        ports.append(free_port())
        operators.append(leasing(2, ports[2]))
        time.sleep(2.5)  # it has seen the Lease held at least once
        assert _metrics(ports[2])["sipdispatch_operator_leader"] == 0.0
        killed = time.monotonic()
        operators[second].process.kill()
        wait_for(
            "the third operator to lead",
            lambda: _metrics(ports[2])["sipdispatch_operator_leader"] == 1.0,
            30,
            interval=0.2,
        )
        replaced = time.monotonic() - killed
        print(f"the third operator led {replaced:.1f}s after the second was killed")
        assert 13 < replaced < 20, "the lease duration (15 s) plus at most a retry (2 s)"
        apply(kubectl, namespace, _trunk("sip:10.9.0.4:5060"))
        wait_for(
            "the third leader's table",
            lambda: _uris(kubectl, namespace) == ["sip:10.9.0.4:5060"],
            20,
        )
        for operator in operators:
            assert "Forbidden" not in operator.log(), operator.log()[-3000:]
    finally:
        for operator in operators:
            operator.stop()
