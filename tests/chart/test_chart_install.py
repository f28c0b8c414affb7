"""The chart installed with ``helm install`` into the real test control plane (kube-apiserver +
etcd; no kubelet, so pods never run and nothing here waits for them).

- every ci/*-values.yaml variant installs and creates the objects it renders, accepted by the
  API server's own validation (e.g. one node port for UDP and TCP);
- an upgrade applies what the values say (the operator's Secret: test_chart_route_keys.py);
- the CRDs the chart renders are accepted by the API server (server-side dry run);
- the containers' command lines, taken from the installed release, run as local processes
  with the release's ServiceAccounts: the operator makes the proxies' Secret and renders the
  table, the proxy (started once the Secret exists, as the kubelet would) signs with its key,
  follows the table, answers SIP on "its pod IP", reports, and its control API wants the token.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promcrds
import pytest
import yaml
from charthelpers import CHART, CI_VALUES, REPO, SecretVolume, container, expand, find, wait_for
from promnames import SYNTHETIC, exposed, used

from kubecluster import KubeCluster, KubeCommandError
from sipdispatch.api.routekeys import fingerprint, parse_keys
from sipphelpers import ManagedProcess, free_port, sip_options_ping

pytestmark = pytest.mark.k8s

Kubectl = Callable[..., str]


def _install_crds(kubectl: Kubectl, *, monitoring: bool = False) -> None:
    """Our CRDs; with ``monitoring`` the Prometheus Operator's own too (see promcrds.py), so
    that ServiceMonitors, PodMonitors and PrometheusRules meet their real schemas."""
    kubectl("apply", "-f", str(REPO / "crds"))
    names = ["crd/dispatchersets.sipdispatch.io", "crd/dispatcherreports.sipdispatch.io"]
    if monitoring:
        for path in promcrds.crd_files():
            # Server-side: the CRDs are too large for the last-applied annotation.
            kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names += [f"crd/{kind}.monitoring.coreos.com" for kind in promcrds.KINDS]
    kubectl("wait", "--for=condition=Established", *names, "--timeout=60s")


def _objects(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def _secret_or_none(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(
            kubectl("get", "secret", name, "-n", namespace, "-o", "json")
        )
    except KubeCommandError:
        return None
    return found


@pytest.fixture
def release(helm: Callable[..., str], kube_namespace: str) -> Iterator[Callable[[str], str]]:
    """Names a release to uninstall after the test (its ClusterRole and binding are
    cluster-wide, and deleted namespaces keep their objects here)."""
    names: list[str] = []

    def track(name: str) -> str:
        names.append(name)
        return name

    yield track
    for name in names:
        helm("uninstall", name, "-n", kube_namespace, "--ignore-not-found")


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_every_ci_variant_installs_its_objects(
    helm: Callable[..., str],
    kubectl: Kubectl,
    kube_namespace: str,
    release: Callable[[str], str],
    values: Path,
) -> None:
    ns = kube_namespace
    _install_crds(kubectl, monitoring=True)
    name = release("ci-" + values.name.removesuffix("-values.yaml"))
    # The CRDs are applied above with kubectl, as the other tests do; Helm would refuse to
    # adopt them, so the chart's own copies are checked by a server-side dry run instead.
    out = helm(
        "install", name, str(CHART), "-n", ns, "-f", str(values), "--set", "crds.enabled=false"
    )
    assert "STATUS: deployed" in out
    rendered = _objects(helm("get", "manifest", name, "-n", ns))
    assert {"Deployment", "Service", "Role"} <= {doc["kind"] for doc in rendered}
    for doc in rendered:
        where = ["-n", ns] if doc["metadata"].get("namespace") else []
        kind = f"{doc['kind'].lower()}.{doc['apiVersion'].split('/')[0]}"
        if "/" not in doc["apiVersion"]:
            kind = doc["kind"].lower()
        live = json.loads(kubectl("get", kind, doc["metadata"]["name"], *where, "-o", "json"))
        assert live["metadata"]["labels"]["app.kubernetes.io/instance"] == name
    sip = json.loads(kubectl("get", "service", f"{name}-sipdispatch", "-n", ns, "-o", "json"))
    wanted = yaml.safe_load(values.read_text()) or {}
    node_port = ((wanted.get("proxy") or {}).get("service") or {}).get("nodePort")
    if node_port:
        assert {(p["protocol"], p["nodePort"]) for p in sip["spec"]["ports"]} == {
            ("UDP", node_port),
            ("TCP", node_port),
        }


def test_an_upgrade_applies_the_new_values(
    helm: Callable[..., str],
    kubectl: Kubectl,
    kube_namespace: str,
    release: Callable[[str], str],
) -> None:
    ns = kube_namespace
    _install_crds(kubectl)
    name = release("keep")
    helm("install", name, str(CHART), "-n", ns)
    out = helm(
        "upgrade", name, str(CHART), "-n", ns,
        "--set", "proxy.replicas=3",
        "--set", "proxy.service.type=LoadBalancer",
    )  # fmt: skip
    deployment = json.loads(
        kubectl("get", "deployment", "keep-sipdispatch-proxy", "-n", ns, "-o", "json")
    )
    assert deployment["spec"]["replicas"] == 3
    # NOTES: warnings first (a load balancer, but Record-Route on the cluster DNS name).
    notes = out.split("NOTES:\n", 1)[1]
    assert notes.startswith("WARNING: The SIP Service is a LoadBalancer"), notes
    helm("upgrade", name, str(CHART), "-n", ns, "--reset-values")


@pytest.mark.parametrize(
    "case",
    [
        ("too-short", "holds a route key of 9 characters; at least 32 are"),
        ("# no key, only a comment", "holds no route key"),
    ],
)
def test_notes_warn_of_an_existing_secret_whose_route_keys_cannot_start_a_proxy(
    helm: Callable[..., str],
    kubectl: Kubectl,
    kube_namespace: str,
    release: Callable[[str], str],
    case: tuple[str, str],
) -> None:
    route_keys, warning = case
    ns = kube_namespace
    _install_crds(kubectl)
    kubectl(
        "create", "secret", "generic", "mine", "-n", ns,
        f"--from-literal=record-route-secret={route_keys}",
        "--from-literal=control-token=token",
    )  # fmt: skip
    out = helm(
        "install", release("weak"), str(CHART), "-n", ns,
        "--set", "proxy.secret.existingSecret=mine",
    )  # fmt: skip
    notes = out.split("NOTES:\n", 1)[1]
    assert f'Secret {ns}/mine key "record-route-secret" {warning}' in notes, notes


def test_the_charts_crds_are_accepted_by_the_api_server(
    helm: Callable[..., str], kubectl: Kubectl, kube_namespace: str
) -> None:
    rendered = helm(
        "template", "sipdispatch", str(CHART), "-n", kube_namespace,
        "--set", "crds.enabled=true", "--show-only", "templates/crds.yaml",
    )  # fmt: skip
    crds = _objects(rendered)
    assert len(crds) == 2
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert out.count("customresourcedefinition.apiextensions.k8s.io/") == 2


# ----------------------------------------------------------------------------- the operator's reach


def _refusal(kube_cluster: KubeCluster, kubeconfig: Path, *args: str, body: str = "") -> str:
    """stderr of a kubectl command that must fail; "" when it succeeded."""
    proc = kube_cluster.run(
        "kubectl", *args, kubeconfig=kubeconfig, input=body or None, check=False
    )
    return "" if proc.returncode == 0 else proc.stderr


def _config_map(name: str, namespace: str, labels: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {"table.yaml": "sets: []\n"},
        }
    )


def test_the_cluster_wide_operator_may_write_only_its_tables(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    release: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """RBAC lets the cluster-wide operator write every ConfigMap; the chart's admission policy
    refuses all but its tables, shown by real requests as its ServiceAccount."""
    ns, kubectl = kube_namespace, kube_cluster.kubectl
    _install_crds(kubectl)
    if kube_cluster.run(
        "kubectl", "get", "cm", "coredns", "-n", "kube-system", check=False
    ).returncode:
        kubectl(
            "create", "configmap", "coredns", "-n", "kube-system", "--from-literal=Corefile=.:53"
        )
    name = release("reach")
    kube_cluster.helm("install", name, str(CHART), "-n", ns)
    operator = kube_cluster.serviceaccount_kubeconfig(
        f"{name}-sipdispatch-operator", ns, tmp_path / "operator.kubeconfig", create=False
    )
    can_i = kube_cluster.run(
        "kubectl", "auth", "can-i", "patch", "configmaps/coredns", "-n", "kube-system",
        kubeconfig=operator, check=False,
    )  # fmt: skip
    assert can_i.stdout.strip() == "yes", "RBAC alone would allow it (the cluster-wide mode)"
    patch = ("patch", "configmap", "coredns", "-n", "kube-system", "--type=merge",
             "-p", '{"data":{"Corefile":"hijacked"}}')  # fmt: skip
    # Admission runs on a server-side dry run too: wait there until the policy is in force.
    wait_for(
        "the policy to be in force",
        lambda: _refusal(kube_cluster, operator, *patch, "--dry-run=server"),
        30,
    )
    refused = _refusal(kube_cluster, operator, *patch)
    assert "ValidatingAdmissionPolicy" in refused, refused
    assert "writes only its tables" in refused, refused
    corefile = json.loads(kubectl("get", "cm", "coredns", "-n", "kube-system", "-o", "json"))
    assert corefile["data"] == {"Corefile": ".:53"}
    # Labelling someone else's ConfigMap as a table is no way in either, even one named so.
    owned = {"app.kubernetes.io/managed-by": "sipdispatch-operator"}
    kubectl("create", "configmap", "cluster-table", "-n", "kube-system", "--from-literal=k=v")
    relabel = ("label", "configmap", "cluster-table", "-n", "kube-system",
               "sipdispatch.io/proxy=cluster", *(f"{k}={v}" for k, v in owned.items()))  # fmt: skip
    assert "may not take over a ConfigMap" in _refusal(kube_cluster, operator, *relabel)
    relabel = ("label", "configmap", "coredns", "-n", "kube-system",
               "sipdispatch.io/proxy=coredns", *(f"{k}={v}" for k, v in owned.items()))  # fmt: skip
    assert "writes only its tables" in _refusal(kube_cluster, operator, *relabel)
    # A new ConfigMap that is not a table: refused; its tables, in any namespace: allowed.
    other = kube_cluster.create_namespace("apps")
    assert "writes only its tables" in _refusal(
        kube_cluster, operator, "apply", "--server-side", "--field-manager=sipdispatch-operator",
        "-f", "-", body=_config_map("app-settings", other, {}),
    )  # fmt: skip
    edge = {**owned, "sipdispatch.io/proxy": "edge"}
    assert "writes only its tables" in _refusal(
        kube_cluster, operator, "apply", "--server-side", "--field-manager=sipdispatch-operator",
        "-f", "-", body=_config_map("edge-settings", other, edge),
    )  # fmt: skip
    table = _config_map("edge-table", other, edge)
    for _ in range(2):  # created, then changed
        assert _refusal(
            kube_cluster, operator, "apply", "--server-side",
            "--field-manager=sipdispatch-operator", "-f", "-", body=table,
        ) == ""  # fmt: skip
        table = table.replace("sets: []", "sets: [] # again")
    with pytest.raises(KubeCommandError, match="forbidden"):
        kubectl("delete", "configmap", "edge-table", "-n", other, kubeconfig=operator)
    kube_cluster.delete_namespace(other)


def test_a_second_release_cannot_add_an_overlapping_operator(kube_cluster: KubeCluster) -> None:
    helm = kube_cluster.helm
    _install_crds(kube_cluster.kubectl)
    first_ns, second_ns = (
        kube_cluster.create_namespace("first"),
        kube_cluster.create_namespace("second"),
    )
    first = "first"
    try:
        notes = helm("install", first, str(CHART), "-n", first_ns)
        assert "One operator per namespace: a release in another namespace sets" in notes
        for values in ([], ["--set", f"operator.watchNamespaces={{{second_ns}}}"]):
            with pytest.raises(KubeCommandError) as refused:
                helm("install", "second", str(CHART), "-n", second_ns, *values)
            assert (
                f"release {first_ns}/{first} runs an operator that watches every namespace"
                in refused.value.stderr
            ), refused.value.stderr
            assert "operator.enabled=false" in refused.value.stderr
        helm("install", "second", str(CHART), "-n", second_ns, "--set", "operator.enabled=false",
             "--set", "proxy.secret.existingSecret=second-keys")  # fmt: skip
        helm("upgrade", first, str(CHART), "-n", first_ns, "--set", "proxy.replicas=3")
        helm("uninstall", "second", "-n", second_ns)
        helm("uninstall", first, "-n", first_ns)
        # Namespaced operators side by side are fine; a cluster-wide one over them is not.
        helm("install", "second", str(CHART), "-n", second_ns,
             "--set", f"operator.watchNamespaces={{{second_ns}}}")  # fmt: skip
        helm("install", first, str(CHART), "-n", first_ns,
             "--set", f"operator.watchNamespaces={{{first_ns}}}")  # fmt: skip
        with pytest.raises(KubeCommandError) as refused:
            helm("install", "third", str(CHART), "-n", first_ns, "--set", "fullnameOverride=third")
        assert f"runs an operator that watches namespace {second_ns}" in refused.value.stderr
    finally:
        for namespace, name in ((second_ns, "second"), (first_ns, first)):
            helm("uninstall", name, "-n", namespace, "--ignore-not-found")
        kube_cluster.delete_namespace(first_ns)
        kube_cluster.delete_namespace(second_ns)


# ----------------------------------------------------------------------------- the commands


def _get(url: str, token: str = "", method: str = "GET", body: Any = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")  # writes take JSON only
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _read(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _command(deployment: dict[str, Any], name: str, env: dict[str, str]) -> list[str]:
    """The container's command line as the kubelet would run it, from this venv."""
    each = container(deployment, name)
    program = shutil.which(each["command"][0], path=str(Path(sys.executable).parent))
    assert program, each["command"]
    return [program, *expand(each["args"], env)]


def test_the_deployments_command_lines_run_with_the_release_identities(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    release: Callable[[str], str],
    tmp_path: Path,
) -> None:
    ns, helm, kubectl = kube_namespace, kube_cluster.helm, kube_cluster.kubectl
    _install_crds(kubectl)
    sip_port, control_port, health_port = free_port(), free_port(), free_port()
    metrics_port = free_port()
    name = release("run")
    helm(
        "install", name, str(CHART), "-n", ns,
        "--set", f"operator.watchNamespaces={{{ns}}}",
        "--set", f"operator.healthPort={health_port}",
        "--set", f"operator.metricsPort={metrics_port}",
        "--set", f"proxy.sipPort={sip_port}",
        "--set", f"proxy.controlPort={control_port}",
    )  # fmt: skip
    docs = _objects(helm("get", "manifest", name, "-n", ns))
    operator = find(docs, "Deployment", "run-sipdispatch-operator")
    proxy = find(docs, "Deployment", "run-sipdispatch-proxy")

    # The Secret volume, as the kubelet would mount it: the operator makes the Secret.
    secret_dir = tmp_path / "secret"
    assert not kube_cluster.run(
        "kubectl", "get", "secret", "run-sipdispatch-secret", "-n", ns, check=False
    ).stdout, "the chart renders no Secret"
    volume = SecretVolume(
        lambda: _secret_or_none(kubectl, ns, "run-sipdispatch-secret"), secret_dir
    )
    mount = container(proxy, "proxy")["volumeMounts"][0]["mountPath"]
    env = {"POD_NAME": "run-sipdispatch-proxy-7d9f-x2", "POD_NAMESPACE": ns, "POD_IP": "127.0.0.1"}

    operator_argv = _command(
        operator, "operator", {"POD_NAME": "run-sipdispatch-operator-5c4d-q7", "POD_NAMESPACE": ns}
    )
    proxy_argv = [arg.replace(mount, str(secret_dir)) for arg in _command(proxy, "proxy", env)]
    accounts = {
        part: kube_cluster.serviceaccount_kubeconfig(
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
            ns,
            tmp_path / f"{part}.kubeconfig",
            create=False,
        )
        for part, deployment in (("operator", operator), ("proxy", proxy))
    }
    processes = [
        ManagedProcess(
            "operator", [*operator_argv, f"--kubeconfig={accounts['operator']}"], tmp_path
        ),
        ManagedProcess("proxy", [*proxy_argv, f"--kubeconfig={accounts['proxy']}"], tmp_path),
    ]
    try:
        processes[0].spawn()
        wait_for(
            "the operator's liveness endpoint",
            lambda: _get(f"http://127.0.0.1:{health_port}/healthz") == 200,
            30,
            processes[0],
        )
        # Until the Secret exists the kubelet does not start the proxy (the mount waits).
        wait_for("the operator's Secret", volume.sync, 30, processes[0])
        route_keys = (secret_dir / "record-route-secret").read_text()
        [signing] = parse_keys(route_keys, "the operator's Secret")
        processes[1].spawn()
        # Ready with no DispatcherSet yet (GitOps tools wait for it): an empty table.
        control = f"http://127.0.0.1:{control_port}"
        wait_for("the proxy's /readyz", lambda: _get(f"{control}/readyz") == 200, 30, *processes)
        assert _get(f"{control}/healthz") == 200
        # Signing with the operator's key, which it made with its control token.
        metrics = _read(f"{control}/metrics")
        assert (
            f'sipdispatch_route_keys{{fingerprint="{fingerprint(signing)}",use="signing"}} 1.0'
            in metrics
        ), metrics
        dispatcherset = {
            "apiVersion": "sipdispatch.io/v1alpha1",
            "kind": "DispatcherSet",
            "metadata": {"name": "trunks"},
            "spec": {"setId": 1, "destinations": [{"uri": "sip:127.0.0.1:9"}]},
        }
        kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(dispatcherset))
        wait_for(
            "the operator's table in the proxy",
            lambda: "sip:127.0.0.1:9" in _read(f"{control}/v1/destinations"),
            30,
            *processes,
        )
        # The operator's metrics, on the port the chart names: it leads, and wrote the table.
        metrics = _read(f"http://127.0.0.1:{metrics_port}/metrics")
        assert "sipdispatch_operator_leader 1.0" in metrics
        assert f'sipdispatch_operator_table_writes_total{{namespace="{ns}"' in metrics
        # Every metric the chart's alerts and dashboard use is one these two processes expose.
        monitored = helm(
            "template", name, str(CHART), "-n", ns,
            "--set", "monitoring.prometheusRule.enabled=true",
            "--set", "monitoring.dashboard.enabled=true",
        )  # fmt: skip
        offered = exposed(metrics) | exposed(_read(f"{control}/metrics")) | SYNTHETIC
        assert used(_objects(monitored)) - offered == set()
        # SIP on "the pod IP" it was given through the downward API.
        assert sip_options_ping("127.0.0.1", sip_port) == 200
        # Its report, named after the pod, for the operator's status.
        wait_for(
            "the replica's DispatcherReport",
            lambda: kubectl("get", "dispatcherreports", "-n", ns, "-o", "name").strip(),
            15,
            *processes,
        )
        report = json.loads(
            kubectl(
                "get",
                "dispatcherreport",
                "sipdispatch-run-sipdispatch-proxy-7d9f-x2",
                "-n",
                ns,
                "-o",
                "json",
            )
        )
        assert report["spec"]["replica"] == env["POD_NAME"]
        # Write calls of the control API need the token from the Secret.
        body = {"set": 1, "uri": "sip:127.0.0.1:9", "state": "dx"}
        put = f"{control}/v1/destinations/state"
        assert _get(put, method="PUT", body=body) in {401, 403}
        token = (secret_dir / "control-token").read_text().strip()
        assert _get(put, token=token, method="PUT", body=body) == 200
        for process in processes:
            log = process.stderr_path.read_text(errors="replace")
            assert "Forbidden" not in log, f"{process.name} was refused by RBAC:\n{log[-3000:]}"
    finally:
        for process in processes:
            if process.proc is not None:
                process.stop()
