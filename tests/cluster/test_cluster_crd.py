"""A CRD on the real API server: schema, status subresource, watch, printer columns."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubecluster import KubeCluster, KubeCommandError

pytestmark = pytest.mark.k8s

GROUP = "test.sipdispatch.io"
PLURAL = "widgets"
CRD_NAME = f"{PLURAL}.{GROUP}"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Healthy", "type": "integer", "jsonPath": ".status.healthy"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "healthy": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def widget_crd(kubectl: Callable[..., str]) -> Iterator[str]:
    kubectl("apply", "-f", "-", input=json.dumps(CRD))
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    yield CRD_NAME
    kubectl("delete", "crd", CRD_NAME, "--wait=false")


def widget(name: str, size: int) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size},
        }
    )


def test_crd_status_subresource_watch_and_printer_columns(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    kubectl: Callable[..., str],
    kube_api: Callable[..., Any],
    widget_crd: str,
) -> None:
    from kubernetes import client, watch  # noqa: PLC0415

    ns = kube_namespace
    created = json.loads(
        kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=widget("w1", 3))
    )
    start_rv = created["metadata"]["resourceVersion"]

    # The schema is enforced by the server.
    with pytest.raises(KubeCommandError, match=r"spec\.size"):
        kubectl("create", "-n", ns, "-f", "-", input=widget("bad", 0))

    # Watch from the creation's resourceVersion in a thread; collect events until the status
    # update arrives (or the server-side timeout ends the stream).
    api = client.CustomObjectsApi(kube_api())
    events: list[tuple[str, dict[str, Any]]] = []
    watching = watch.Watch()

    def run_watch() -> None:
        for event in watching.stream(
            api.list_namespaced_custom_object,
            GROUP,
            "v1",
            ns,
            PLURAL,
            resource_version=start_rv,
            timeout_seconds=20,
        ):
            obj = event["object"]
            events.append((event["type"], obj))
            if obj.get("status", {}).get("phase") == "Ready":
                watching.stop()

    watcher = threading.Thread(target=run_watch, name="widget-watch")
    watcher.start()

    # Status is a subresource: a patch of the main resource does not change it ...
    kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"size": 5}, "status": {"phase": "Ignored"}}),
    )
    # ... while a patch of the status subresource does (and cannot change the spec).
    kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"size": 9}, "status": {"phase": "Ready", "healthy": 2}}),
    )
    watcher.join(timeout=30)
    assert not watcher.is_alive(), "watch did not end"

    assert [kind for kind, _ in events] == ["MODIFIED", "MODIFIED"], events
    spec_event, status_event = (obj for _, obj in events)
    assert spec_event["spec"] == {"size": 5}
    assert "status" not in spec_event
    assert status_event["spec"] == {"size": 5}
    assert status_event["status"] == {"phase": "Ready", "healthy": 2}

    table = kubectl("get", "widgets", "-n", ns, "--no-headers=false").splitlines()
    assert table[0].split() == ["NAME", "SIZE", "PHASE", "HEALTHY", "AGE"]
    assert table[1].split()[:4] == ["w1", "5", "Ready", "2"]
    assert len(table) == 2

    wide = kubectl(
        "get",
        "widget",
        "w1",
        "-n",
        ns,
        "-o",
        "custom-columns=PHASE:.status.phase,SIZE:.spec.size",
        "--no-headers",
    )
    assert wide.split() == ["Ready", "5"]
    assert kube_cluster.kube_version.startswith("v1.")
