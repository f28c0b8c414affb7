"""The operator logs in through an ``exec`` credential plugin, as on clusters whose
kubeconfigs hand out short-lived tokens (EKS, GKE, OIDC helpers): a plugin script written
here prints an ExecCredential with a token of the operator's ServiceAccount that expires
within seconds, so kopf and the operator's own client both have to run it again, and the
operator keeps rendering tables through it. A proxy in Kubernetes mode follows the table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kubeproc import (
    TABLE,
    KubeProxy,
    OperatorProcess,
    apply,
    condition,
    dispatcherset,
    install_chart,
    install_crds,
    status_of,
    wait_for,
)

from kubecluster import KubeCluster
from kubeconfigs import exec_plugin, kubeconfig, runs

pytestmark = pytest.mark.k8s

TRUNK = "sip:127.0.0.10:5060"  # static destinations: probed by the proxy, so on loopback
PSTN = "sip:127.0.0.20:5060"
LIFETIME = 20.0  # seconds each token from the plugin is said to live


def table_text(cluster: KubeCluster, namespace: str) -> str:
    """The rendered table, "" while there is none."""
    found = cluster.run(
        "kubectl", "get", "configmap", TABLE, "-n", namespace, "-o", "json", check=False
    )
    if found.returncode != 0:
        return ""
    text: str = json.loads(found.stdout)["data"]["table.yaml"]
    return text


def test_the_operator_works_through_an_exec_plugin_with_short_lived_tokens(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    install_crds(kube_cluster.kubectl)
    identities = install_chart(kube_cluster, kube_namespace, tmp_path / "chart")
    token_file = tmp_path / "operator-token"
    token_file.write_text(
        kube_cluster.kubectl(
            "create", "token", "sipdispatch-operator", "-n", kube_namespace, "--duration=1h"
        ).strip()
    )
    user, plugin_runs = exec_plugin(tmp_path / "plugin", token_file, expires_in=LIFETIME)
    config = kubeconfig(
        tmp_path / "operator.kubeconfig", kube_cluster.server, user, ca_file=kube_cluster.ca_file
    )
    operator = OperatorProcess(tmp_path, config, kube_namespace).start()
    proxy: KubeProxy | None = None
    try:
        started = time.monotonic()
        apply(
            kube_cluster.kubectl,
            kube_namespace,
            dispatcherset("trunks", {"setId": 1, "destinations": [{"uri": TRUNK}]}),
        )
        wait_for(
            "the table rendered", lambda: TRUNK in table_text(kube_cluster, kube_namespace), 15
        )
        proxy = KubeProxy(tmp_path, identities.proxy, kube_namespace).start()
        assert set(proxy.destinations()) == {TRUNK}
        wait_for(
            "a status written",
            lambda: condition(status_of(kube_cluster.kubectl, kube_namespace, "trunks"), "Ready"),
            15,
        )

        # Past the first token's lifetime, the operator still writes (with a new one).
        time.sleep(max(0.0, started + LIFETIME + 1 - time.monotonic()))
        apply(
            kube_cluster.kubectl,
            kube_namespace,
            dispatcherset("pstn", {"setId": 2, "destinations": [{"uri": PSTN}]}),
        )
        wait_for(
            "the new set rendered", lambda: PSTN in table_text(kube_cluster, kube_namespace), 15
        )
        wait_for(
            "the new set's status",
            lambda: condition(status_of(kube_cluster.kubectl, kube_namespace, "pstn"), "Ready"),
            15,
        )
        # kopf's login and the operator's own client ran it, then again for fresh tokens.
        assert runs(plugin_runs) >= 3, operator.log()[-3000:]
    finally:
        if proxy is not None:
            proxy.stop()
        operator.stop()
    logs = operator.log() + (proxy.log() if proxy is not None else "")
    assert "Forbidden" not in logs, logs[-4000:]
    assert " 401" not in logs, logs[-4000:]
