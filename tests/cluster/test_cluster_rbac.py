"""RBAC is real: a ServiceAccount is denied until a RoleBinding grants it access."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubecluster import KubeCluster, KubeCommandError

pytestmark = pytest.mark.k8s


def wait_until(predicate: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_serviceaccount_denied_before_rolebinding_allowed_after(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    kubectl: Callable[..., str],
    serviceaccount_kubeconfig: Callable[..., Path],
    kube_api: Callable[..., Any],
) -> None:
    from kubernetes import client  # noqa: PLC0415

    ns = kube_namespace
    kubectl("create", "configmap", "probe", "-n", ns, "--from-literal=k=v")
    sa_config = serviceaccount_kubeconfig("reader", ns)

    whoami = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=sa_config))
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"

    # Denied: by kubectl ...
    with pytest.raises(KubeCommandError, match="forbidden") as denied:
        kubectl("get", "configmap", "probe", "-n", ns, kubeconfig=sa_config)
    assert f'"system:serviceaccount:{ns}:reader" cannot get resource "configmaps"' in (
        denied.value.stderr
    )
    # ... and by the Python client using the same kubeconfig.
    core = client.CoreV1Api(kube_api(sa_config))
    with pytest.raises(client.ApiException) as api_denied:
        core.read_namespaced_config_map("probe", ns)
    assert api_denied.value.status == 403

    kubectl("create", "role", "cm-reader", "-n", ns, "--verb=get,list", "--resource=configmaps")
    kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        ns,
        "--role=cm-reader",
        f"--serviceaccount={ns}:reader",
    )

    def allowed() -> bool:
        try:
            kubectl("get", "configmap", "probe", "-n", ns, kubeconfig=sa_config)
        except KubeCommandError:
            return False
        return True

    assert wait_until(allowed), "RoleBinding did not take effect"
    assert core.read_namespaced_config_map("probe", ns).data == {"k": "v"}
    # Only what the Role grants: still no writes, and nothing in other namespaces.
    can_delete = kube_cluster.run(
        "kubectl",
        "auth",
        "can-i",
        "delete",
        "configmaps",
        "-n",
        ns,
        kubeconfig=sa_config,
        check=False,
    )
    assert (can_delete.returncode, can_delete.stdout.strip()) == (1, "no")
    with pytest.raises(KubeCommandError, match="forbidden"):
        kubectl("delete", "configmap", "probe", "-n", ns, kubeconfig=sa_config)
    with pytest.raises(KubeCommandError, match="forbidden"):
        kubectl("get", "configmaps", "-n", "default", kubeconfig=sa_config)
