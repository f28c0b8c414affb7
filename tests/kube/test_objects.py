"""sipdispatch.kube's object operations against a real API server: what each answers is the
object as stored, whichever success code the server used (a server-side apply that creates
its object answers 201, one that updates it 200), and a refusal is a ``KubeError`` with the
server's code and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubecluster import KubeCluster
from sipdispatch.api.names import API_VERSION
from sipdispatch.kube import CONFIG_MAP, Kind, Kube, KubeError, locate, objects

pytestmark = pytest.mark.k8s

CRDS = Path(__file__).resolve().parents[2] / "crds"
REPORTS = Kind("sipdispatch.io", "v1alpha1", "dispatcherreports")


@pytest.fixture
def crds(kube_cluster: KubeCluster) -> None:
    kube_cluster.kubectl("apply", "-f", str(CRDS))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/dispatcherreports.sipdispatch.io",
        "--timeout=60s",
    )


def report(namespace: str, state: str) -> dict[str, object]:
    return {
        "apiVersion": API_VERSION,
        "kind": "DispatcherReport",
        "metadata": {"name": "edge-proxy-0", "namespace": namespace},
        "spec": {
            "proxy": "edge",
            "replica": "proxy-0",
            "table": "1",
            "reportedAt": "2026-12-05T12:00:00Z",
            "heartbeatSeconds": 30,
            "destinations": [
                {"set": 1, "uri": "sip:10.0.0.1", "state": state, "eligible": state == "AP"}
            ],
        },
    }


async def test_apply_answers_the_stored_object_when_it_creates_and_when_it_updates(
    crds: None, kube_namespace: str, admin_kubeconfig: Path
) -> None:
    kube = Kube(locate(admin_kubeconfig))
    try:
        created = await objects.apply(
            kube, REPORTS, report(kube_namespace, "AP"), field_manager="test"
        )
        assert created["metadata"]["generation"] == 1
        assert created["spec"]["destinations"][0]["state"] == "AP"

        updated = await objects.apply(
            kube, REPORTS, report(kube_namespace, "IP"), field_manager="test"
        )
        assert updated["metadata"]["generation"] == 2
        assert updated["spec"]["destinations"][0]["state"] == "IP"

        found = await objects.get(kube, REPORTS, kube_namespace, "edge-proxy-0")
        assert found["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]

        await objects.delete(kube, REPORTS, kube_namespace, "edge-proxy-0")
        with pytest.raises(KubeError) as gone:
            await objects.get(kube, REPORTS, kube_namespace, "edge-proxy-0")
        assert gone.value.status == 404
        assert "edge-proxy-0" in str(gone.value)
    finally:
        await kube.close()


async def test_create_and_list_answer_plain_json(
    kube_namespace: str, admin_kubeconfig: Path
) -> None:
    kube = Kube(locate(admin_kubeconfig))
    try:
        body = {"metadata": {"name": "table"}, "data": {"table.yaml": "sets: []\n"}}
        created = await objects.create(kube, CONFIG_MAP, kube_namespace, body)
        assert created["data"] == {"table.yaml": "sets: []\n"}
        listed, version = await objects.list_objects(
            kube, CONFIG_MAP, kube_namespace, field_selector="metadata.name=table"
        )
        assert [item["metadata"]["name"] for item in listed] == ["table"]
        assert int(version) >= int(created["metadata"]["resourceVersion"])
        with pytest.raises(KubeError) as taken:
            await objects.create(kube, CONFIG_MAP, kube_namespace, body)
        assert taken.value.status == 409
    finally:
        await kube.close()
