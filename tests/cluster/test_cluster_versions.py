"""kubectl, helm and the API server report the pinned versions (set by the build's ldflags)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kubecluster import KubeCluster

pytestmark = pytest.mark.k8s


def test_kubectl_reports_client_and_server_version(
    kube_cluster: KubeCluster, kubectl: Callable[..., str]
) -> None:
    pinned = kube_cluster.kube_version
    major, minor = pinned.removeprefix("v").split(".")[:2]
    versions = json.loads(kubectl("version", "-o", "json"))
    for side in ("clientVersion", "serverVersion"):
        info = versions[side]
        assert info["gitVersion"] == pinned, side
        assert (info["major"], info["minor"]) == (major, minor), side
        assert info["gitTreeState"] == "clean", side
    assert "warning" not in json.dumps(versions).lower()


def test_helm_reports_version_and_renders_against_the_server(
    kube_cluster: KubeCluster,
    helm: Callable[..., str],
    kubectl: Callable[..., str],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    assert helm("version", "--template", "{{.Version}}") == kube_cluster.helm_version
    assert 'GitTreeState:"clean"' in helm("version")

    # A chart with a kubeVersion constraint: helm refuses it if the server reports v0.0.0-master.
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    major_minor = ".".join(kube_cluster.kube_version.split(".")[:2])

    # Offline rendering uses the version compiled into helm (chartutil ldflags).
    rendered = helm("template", "probe", str(chart))
    assert f'kube: "{major_minor}.0"' in rendered

    # A real install renders with the server's version and creates the objects.
    helm("install", "probe", str(chart), "-n", kube_namespace)
    data = json.loads(kubectl("get", "configmap", "probe", "-n", kube_namespace, "-o", "json"))
    assert data["data"]["kube"] == kube_cluster.kube_version
    assert "probe" in helm("list", "-n", kube_namespace, "-q").split()
    helm("uninstall", "probe", "-n", kube_namespace)
