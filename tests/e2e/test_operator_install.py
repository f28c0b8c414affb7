"""Installing on a real API server: the CRDs, the examples, nonsense refused by the schema
with the field named, ``kubectl explain``, and the chart's RBAC granting what each part needs
and nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeproc import REPO, TABLE, install_crds, render_chart, wait_for

from kubecluster import KubeCluster, KubeCommandError
from sipdispatch.api import crd

pytestmark = pytest.mark.k8s

EXAMPLES = sorted((REPO / "examples").glob("dispatcherset-*.yaml"))


def dset_yaml(spec: dict[str, Any], name: str = "bad") -> str:
    return json.dumps(
        {
            "apiVersion": "sipdispatch.io/v1alpha1",
            "kind": "DispatcherSet",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def test_crds_then_every_example_apply(kubectl: Callable[..., str], kube_namespace: str) -> None:
    install_crds(kubectl)
    assert len(EXAMPLES) >= 2
    for path in EXAMPLES:
        kubectl("apply", "-n", kube_namespace, "-f", str(path))
    names = {
        doc["metadata"]["name"]
        for path in EXAMPLES
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == "DispatcherSet"
    }
    table = kubectl("get", "dset", "-n", kube_namespace).splitlines()
    assert table[0].split() == [
        "NAME",
        "SET",
        "ALGORITHM",
        "UP/TOTAL",
        "READY",
        "REASON",
        "TAKES",
        "AGE",
    ]
    assert {line.split()[0] for line in table[1:]} == names
    # The schema's defaults: every example shows its proxy, given or not.
    wide = kubectl("get", "dset", "-n", kube_namespace, "-o", "wide").splitlines()
    assert wide[0].split()[-2:] == ["PROXY", "MESSAGE"]
    at = wide[0].index("PROXY")  # columns are aligned; status columns are empty here
    proxies = {line.split()[0]: line[at:].split()[0] for line in wide[1:]}
    assert proxies == dict.fromkeys(names, "sipdispatch")
    stored = json.loads(kubectl("get", "dset", "asterisk", "-n", kube_namespace, "-o", "json"))
    assert stored["spec"]["missingHashKey"] == "fallback"
    assert stored["spec"]["priority"] == 0
    assert stored["spec"]["gateways"][0]["weight"] == 1
    assert stored["spec"]["drainGraceSeconds"] == 120  # given
    trunks = json.loads(kubectl("get", "dset", "trunks", "-n", kube_namespace, "-o", "json"))
    assert trunks["spec"]["probing"]["jitter"] == 0.2
    assert trunks["spec"]["probing"]["interval"] == 5  # given
    assert trunks["spec"]["drainGraceSeconds"] == 30


def _condition(**changes: Any) -> dict[str, Any]:
    good = {
        "type": "Ready",
        "status": "True",
        "reason": "DestinationsUp",
        "message": "1 of 1 destinations up on 1 replicas",
        "lastTransitionTime": "2030-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    return {**good, **changes}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([_condition(status="Maybe")], 'status.conditions[0].status: Unsupported value: "Maybe"'),
        ([_condition(reason="not one word")], "status.conditions[0].reason: Invalid value"),
        ([_condition(reason="")], "status.conditions[0].reason: Invalid value"),
        ([_condition(lastTransitionTime="yesterday")], "status.conditions[0].lastTransitionTime"),
        ([{"type": "Ready", "status": "True"}], "status.conditions[0].reason: Required value"),
        ([_condition(observedGeneration=-1)], "status.conditions[0].observedGeneration"),
        ([_condition(), _condition(status="False")], "status.conditions[1]: Duplicate value"),
    ],
)
def test_the_condition_schema_is_metav1_condition(
    kubectl: Callable[..., str],
    kube_namespace: str,
    conditions: list[dict[str, Any]],
    expected: str,
) -> None:
    install_crds(kubectl)
    kubectl("apply", "-n", kube_namespace, "-f", "-", input=dset_yaml({"setId": 1}, "cond"))

    def patch(status: dict[str, Any]) -> str:
        return kubectl(
            "patch",
            "dset",
            "cond",
            "-n",
            kube_namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    patch(
        {"conditions": [_condition(), _condition(type="Stalled", status="False", reason="Valid")]}
    )
    with pytest.raises(KubeCommandError) as refused:
        patch({"conditions": conditions})
    assert expected in refused.value.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"setId": 1, "algorithm": "roundrobin"}, 'spec.algorithm: Invalid value: "roundrobin"'),
        ({"setId": 1, "algorithm": 14}, "spec.algorithm: Invalid value: 14: unknown algorithm"),
        (
            {"setId": 1, "destinations": [{"uri": "sip:10.0.0.1", "weight": -1}]},
            "spec.destinations[0].weight: Invalid value: -1",
        ),
        (
            {"setId": 1, "destinations": [{"uri": "10.0.0.1:5060"}]},
            'spec.destinations[0].uri: Invalid value: "10.0.0.1:5060": must be a SIP URI',
        ),
        ({"setId": -3}, "spec.setId: Invalid value: -3"),
        (
            {"setId": 1, "failover": {"codes": [200]}},
            "spec.failover.codes[0]: Invalid value: 200: must be a 4xx or 5xx",
        ),
        ({"setId": 1, "gateways": [{"service": "Gateways"}]}, "spec.gateways[0].service"),
        ({"setId": 1, "destinatons": []}, 'unknown field "spec.destinatons"'),
        ({"algorithm": 4}, "spec.setId: Required value"),
        # list-map keys: one URI, one Service at most once (spelt the same; the operator
        # also refuses one URI spelt two ways)
        (
            {"setId": 1, "destinations": [{"uri": "sip:10.0.0.1"}, {"uri": "sip:10.0.0.1"}]},
            "spec.destinations[1]: Duplicate value",
        ),
        (
            {"setId": 1, "gateways": [{"service": "gw"}, {"service": "gw", "port": 5080}]},
            "spec.gateways[1]: Duplicate value",
        ),
        (
            {"setId": 1, "match": {"methods": ["INVITE", "INVITE"]}},
            'spec.match.methods[1]: Duplicate value: "INVITE"',
        ),
        # CEL: the models' cross-field checks, naming the field
        (
            {"setId": 1, "algorithm": "hash-key"},
            "spec.hashKey: Required value: required by algorithm hash-key",
        ),
        ({"setId": 1, "algorithm": 7}, "spec.hashKey: Required value"),
        (
            {"setId": 1, "algorithm": 4, "hashKey": "X-Queue"},
            "spec.hashKey: Forbidden: only used by algorithm hash-key",
        ),
        ({"setId": 1, "hashKey": "X-Queue"}, "spec.hashKey: Forbidden"),
        (
            {"setId": 1, "probing": {"interval": 2, "timeout": 5}},
            "spec.probing.timeout: Invalid value: must not be longer than the interval",
        ),
        # the default interval (10) filled in first
        ({"setId": 1, "probing": {"timeout": 20}}, "spec.probing.timeout: Invalid value"),
        (
            {"setId": 1, "destinations": [{"uri": "sip:10.0.0.1", "attrs": {"weight": "2"}}]},
            "spec.destinations[0].attrs: Invalid value: attrs may not hold weight",
        ),
        (
            {"setId": 1, "gateways": [{"service": "gw", "port": 0}]},
            "spec.gateways[0].port: Invalid value: 0: must be a port number (1-65535)",
        ),
    ],
)
def test_the_apiserver_refuses_nonsense_naming_the_field(
    kubectl: Callable[..., str], kube_namespace: str, spec: dict[str, Any], expected: str
) -> None:
    install_crds(kubectl)
    with pytest.raises(KubeCommandError) as refused:
        kubectl("apply", "-n", kube_namespace, "-f", "-", input=dset_yaml(spec))
    assert expected in refused.value.stderr


def _level(path: list[str]) -> dict[str, Any]:
    node: dict[str, Any] = crd.dispatcherset_crd()["spec"]["versions"][0]["schema"]
    node = node["openAPIV3Schema"]
    for part in path:
        node = node["properties"][part]
        node = node.get("items", node)
    return node


@pytest.mark.parametrize(
    "path",
    [
        ["spec"],
        ["spec", "destinations"],
        ["spec", "gateways"],
        ["spec", "probing"],
        ["spec", "failover"],
        ["status"],
        ["status", "destinations"],
    ],
)
def test_kubectl_explain_documents_every_field(
    kubectl: Callable[..., str], path: list[str]
) -> None:
    install_crds(kubectl)
    text = kubectl("explain", "dispatcherset." + ".".join(path))
    for name, node in _level(path)["properties"].items():
        assert f"\n  {name}\t" in text, f"{name} missing from kubectl explain"
        first_words = " ".join(node["description"].split()[:3])
        assert first_words in " ".join(text.split()), f"{name}: description not shown"
    assert "<empty>" not in text


def can_i(cluster: KubeCluster, kubeconfig: Path, *args: str) -> bool:
    found = cluster.run("kubectl", "auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return found.stdout.strip() == "yes"


def test_the_chart_grants_each_part_what_it_needs_and_no_more(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    serviceaccount_kubeconfig: Callable[..., Path],
) -> None:
    ns = kube_namespace
    install_crds(kube_cluster.kubectl)  # kubectl auth can-i resolves their names
    # The default render: the operator watches every namespace through a ClusterRole.
    rendered = render_chart(kube_cluster, ns, release="rbac")
    rbac = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in rbac]
    # Exactly these identities and grants, nothing wider (the workloads are tested in tests/chart).
    assert sorted(kinds) == sorted(
        [
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",  # the proxy's
            "RoleBinding",
            "Role",  # the operator's Lease
            "RoleBinding",
            "Role",  # the proxies' Secret, which the operator makes and rotates
            "RoleBinding",
            # DispatcherSets for people: aggregated into Kubernetes' view and edit roles, so
            # bound to nobody here (rbac.aggregateClusterRoles)
            "ClusterRole",
            "ClusterRole",
        ]
    )
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=rendered)
    try:
        _check_grants(kube_cluster, ns, serviceaccount_kubeconfig)
    finally:
        # Cluster-wide objects outlive the namespace here; a cluster-wide operator left
        # behind would make the chart refuse every later install (one operator per namespace).
        for kinds, name in (
            ("clusterrole,clusterrolebinding", "rbac-sipdispatch-operator"),
            (
                "validatingadmissionpolicy,validatingadmissionpolicybinding",
                "rbac-sipdispatch-operator-tables",
            ),
            (
                "validatingadmissionpolicy,validatingadmissionpolicybinding",
                "rbac-sipdispatch-operator-secret",
            ),
        ):
            kube_cluster.kubectl("delete", kinds, name, "--ignore-not-found")


def _check_grants(
    kube_cluster: KubeCluster, ns: str, serviceaccount_kubeconfig: Callable[..., Path]
) -> None:
    prefix = "rbac-sipdispatch"
    operator = serviceaccount_kubeconfig(f"{prefix}-operator", ns, create=False)
    proxy = serviceaccount_kubeconfig(f"{prefix}-proxy", ns, create=False)
    # RBAC changes reach the authorizer through a watch: wait for the first grant.
    wait_for(
        "the operator's ClusterRoleBinding",
        lambda: can_i(kube_cluster, operator, "list", "endpointslices.discovery.k8s.io"),
        15,
    )
    wait_for(
        "the proxy's RoleBinding",
        lambda: can_i(kube_cluster, proxy, "create", "dispatcherreports.sipdispatch.io", "-n", ns),
        15,
    )
    for verb, what, *more in [
        ("watch", "dispatchersets.sipdispatch.io"),
        ("patch", "dispatchersets.sipdispatch.io", "--subresource=status"),
        ("list", "endpointslices.discovery.k8s.io"),
        ("watch", "services"),  # their grant annotations
        ("watch", "dispatcherreports.sipdispatch.io"),
        ("patch", "configmaps"),
        ("create", "events"),
    ]:
        assert can_i(kube_cluster, operator, verb, what, *more, "-n", "default"), (verb, what)
    for verb, what in [
        ("patch", "dispatchersets.sipdispatch.io"),  # the spec is the user's
        ("delete", "configmaps"),
        ("patch", "services"),
        ("get", "secrets"),
        ("get", "secrets/other"),
        ("list", "secrets"),
    ]:
        assert not can_i(kube_cluster, operator, verb, what, "-n", ns), (verb, what)
    # The proxies' Secret only, by name, in the release namespace only.
    assert can_i(kube_cluster, operator, "patch", "secrets/rbac-sipdispatch-secret", "-n", ns)
    assert not can_i(
        kube_cluster, operator, "get", "secrets/rbac-sipdispatch-secret", "-n", "default"
    )
    # A proxy replica reads its one table and writes reports; nothing else.
    assert can_i(kube_cluster, proxy, "watch", f"configmaps/{TABLE}", "-n", ns)
    assert not can_i(kube_cluster, proxy, "get", "configmaps/other", "-n", ns)
    assert not can_i(kube_cluster, proxy, "patch", f"configmaps/{TABLE}", "-n", ns)
    assert can_i(kube_cluster, proxy, "create", "dispatcherreports.sipdispatch.io", "-n", ns)
    assert not can_i(kube_cluster, proxy, "get", "dispatchersets.sipdispatch.io", "-n", ns)
    assert not can_i(
        kube_cluster, proxy, "create", "dispatcherreports.sipdispatch.io", "-n", "default"
    )
