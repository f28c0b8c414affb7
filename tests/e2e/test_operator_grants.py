"""A gateway Service in another namespace, on the real API server: refused (Stalled, naming the
field) until that Service grants the DispatcherSet's namespace, served while it does, drained
when the grant is withdrawn. The operator runs as the chart's ServiceAccount, watching both
namespaces (the chart's Roles in each); no proxy is needed, the table says what is served.
Nothing is sent to the endpoint address: no proxy runs to probe it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubeproc import (
    TABLE,
    OperatorProcess,
    apply,
    condition,
    endpoint_slice,
    get,
    install_crds,
    render_chart,
    service,
    status_of,
    wait_for,
)

from kubecluster import KubeCluster
from sipdispatch.api.names import GATEWAY_GRANT

pytestmark = pytest.mark.k8s

ENDPOINT = "sip:10.213.250.2:5060"


@pytest.fixture
def telephony(kube_cluster: KubeCluster) -> Iterator[str]:
    """The namespace the gateway Service lives in."""
    name = kube_cluster.create_namespace("telephony")
    yield name
    kube_cluster.delete_namespace(name)


def table_text(kube_cluster: KubeCluster, namespace: str) -> str:
    text: str = get(kube_cluster.kubectl, namespace, "configmap", TABLE)["data"]["table.yaml"]
    return text


def test_a_gateway_in_another_namespace_needs_the_services_grant(
    kube_cluster: KubeCluster, kube_namespace: str, telephony: str, tmp_path: Path
) -> None:
    voice, kubectl = kube_namespace, kube_cluster.kubectl
    install_crds(kubectl)
    rendered = render_chart(
        kube_cluster, voice, f"operator.watchNamespaces={{{voice},{telephony}}}"
    )
    # The chart's Role and RoleBinding in each watched namespace, the rest in the release's.
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for namespace in (voice, telephony):
        mine = [d for d in docs if d["metadata"].get("namespace", voice) == namespace]
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": mine})
        kubectl("apply", "-n", namespace, "-f", "-", input=listed)
    operator_config = kube_cluster.serviceaccount_kubeconfig(
        "sipdispatch-operator", voice, tmp_path / "operator.kubeconfig", create=False
    )
    apply(
        kubectl,
        telephony,
        service("pbx"),
        endpoint_slice("pbx-1", "pbx", ["10.213.250.2"], 5060, pod="pbx-0"),
    )
    operator = OperatorProcess(
        tmp_path, operator_config, voice, "--namespace", telephony, name="operator"
    ).start()
    try:
        apply(
            kubectl,
            voice,
            {
                "apiVersion": "sipdispatch.io/v1alpha1",
                "kind": "DispatcherSet",
                "metadata": {"name": "pbx"},
                "spec": {"setId": 1, "gateways": [{"service": "pbx", "namespace": telephony}]},
            },
        )
        refused = wait_for(
            "the set refused without a grant",
            lambda: (
                condition(status_of(kubectl, voice, "pbx"), "Stalled").get("status") == "True"
                and condition(status_of(kubectl, voice, "pbx"), "Stalled")
            ),
            15,
        )
        assert refused["reason"] == "InvalidSpec"
        assert refused["message"] == (
            f"spec.gateways[0].namespace: Service {telephony}/pbx does not grant DispatcherSets "
            f"of namespace {voice} (annotation {GATEWAY_GRANT} on the Service) "
            "(the set is not in the table)"
        )
        kubectl("annotate", "service", "pbx", "-n", telephony, f"{GATEWAY_GRANT}=edge, {voice}")
        wait_for(
            "the endpoint served once granted",
            lambda: ENDPOINT in table_text(kube_cluster, voice),
            15,
        )
        served = wait_for(
            "Stalled cleared",
            lambda: (
                (status := status_of(kubectl, voice, "pbx"))
                and condition(status, "Stalled").get("status") == "False"
                and status
            ),
            15,
        )
        assert [d["uri"] for d in served["destinations"]] == [ENDPOINT]

        # Withdrawn: refused again, and the endpoint drains (DR) instead of serving on.
        kubectl("annotate", "service", "pbx", "-n", telephony, f"{GATEWAY_GRANT}-")
        wait_for(
            "the set refused again",
            lambda: condition(status_of(kubectl, voice, "pbx"), "Stalled").get("status") == "True",
            15,
        )
        assert condition(status_of(kubectl, voice, "pbx"), "Stalled")["message"].endswith(
            "(the table keeps serving generation 1)"
        )
        table = wait_for(
            "the endpoint draining",
            lambda: (
                (text := table_text(kube_cluster, voice))
                and f"{ENDPOINT}\n    draining: true" in text
                and text
            ),
            15,
        )
        assert table.count(ENDPOINT) == 1
    finally:
        operator.stop()
    assert "Forbidden" not in operator.log(), operator.log()[-3000:]
