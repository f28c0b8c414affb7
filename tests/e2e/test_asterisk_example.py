"""examples/asterisk-cluster/ is accepted by a real API server (server-side dry run): the
StatefulSet, its Services, the Asterisk configuration and the DispatcherSets, as
``kubectl apply -k`` sends them (with the image the kustomization names)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kubeproc import REPO, install_crds

pytestmark = [pytest.mark.k8s]

EXAMPLE = REPO / "examples" / "asterisk-cluster"


def test_every_object_is_accepted_by_the_api_server(
    kubectl: Callable[..., str], kube_namespace: str
) -> None:
    install_crds(kubectl)
    out = kubectl(
        "apply", "--dry-run=server", "-n", kube_namespace, "-k", str(EXAMPLE), "-o", "json"
    )
    items = json.loads(out)["items"]
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in items)
    print(f"\naccepted (server-side dry run): {kinds}")
    assert kinds == sorted(
        [
            "ConfigMap/asterisk-config",
            "Service/asterisk",
            "Service/asterisk-0",
            "Service/asterisk-1",
            "Service/asterisk-2",
            "StatefulSet/asterisk",
            "DispatcherSet/asterisk",
            "DispatcherSet/queue-sales",
            "DispatcherSet/queue-support",
            "DispatcherSet/carriers",
        ]
    )
    statefulset = next(o for o in items if o["kind"] == "StatefulSet")
    image = statefulset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/voice/asterisk:22.5.2"
