"""Top-level test fixtures: the real Kubernetes control plane (see tests/kubecluster.py).

Tests that talk to the API server are marked ``@pytest.mark.k8s`` and request:

- ``kube_cluster``: the session's ``KubeCluster`` (etcd + kube-apiserver, started on first use,
  stopped at session end); ``kube_cluster.env(kubeconfig)`` is the environment for a subprocess.
- ``admin_kubeconfig``: ``Path`` of the admin (system:masters) kubeconfig.
- ``kube_namespace``: a fresh namespace name for this test, deleted afterwards.
- ``kubectl(*args, kubeconfig=None, input=None, timeout=60) -> str``: runs the built kubectl
  (admin unless ``kubeconfig``), returns stdout, raises ``KubeCommandError`` with stderr.
- ``helm(*args, kubeconfig=None, timeout=120) -> str``: the same for helm.
- ``serviceaccount_kubeconfig(name, namespace, path=None, *, create=True) -> Path``: a
  kubeconfig holding a token for that ServiceAccount (created if missing).
- ``kube_api(kubeconfig=None)``: a ``kubernetes.client.ApiClient``, closed after the test.

The binaries are built (or found in the cache) once, at collection time, only when a selected
test needs the cluster; a failure to build or start fails the run, it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kubecluster
from kubecluster import KubeCluster

_CLUSTER_FIXTURES = {
    "kube_cluster",
    "admin_kubeconfig",
    "kube_namespace",
    "kubectl",
    "helm",
    "serviceaccount_kubeconfig",
    "kube_api",
    "helm_cli",  # tests/chart: helm alone, no cluster, but the same build
}


def _needs_cluster(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return item.get_closest_marker("k8s") is not None or bool(names & _CLUSTER_FIXTURES)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # Build here, outside any test's timeout: a cold build takes minutes, a cached one is instant.
    if config.option.collectonly or not any(_needs_cluster(item) for item in items):
        return
    if kubecluster.is_built():
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        reporter.write_line(
            "building kube-apiserver, kubectl, etcd and helm for the k8s tests "
            "(once; cached in ~/.cache/sipdispatch) ...",
            bold=True,
        )
    try:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                kubecluster.build(stream=True)
        else:
            kubecluster.build(stream=True)
    except Exception as exc:
        raise pytest.UsageError(f"cannot build the test control plane: {exc}") from exc


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    cluster = kubecluster.start(owner_pid=os.getpid())
    try:
        yield cluster
    finally:
        kubecluster.stop(cluster)


@pytest.fixture(scope="session")
def admin_kubeconfig(kube_cluster: KubeCluster) -> Path:
    return kube_cluster.kubeconfig


@pytest.fixture
def kubectl(kube_cluster: KubeCluster) -> Callable[..., str]:
    return kube_cluster.kubectl


@pytest.fixture
def helm(kube_cluster: KubeCluster) -> Callable[..., str]:
    return kube_cluster.helm


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = kube_cluster.create_namespace(request.node.name)
    yield name
    kube_cluster.delete_namespace(name)


@pytest.fixture
def serviceaccount_kubeconfig(kube_cluster: KubeCluster, tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, namespace: str, path: Path | None = None, *, create: bool = True) -> Path:
        target = path or tmp_path / f"sa-{namespace}-{name}.kubeconfig"
        return kube_cluster.serviceaccount_kubeconfig(name, namespace, target, create=create)

    return make


@pytest.fixture
def kube_api(kube_cluster: KubeCluster) -> Iterator[Callable[..., Any]]:
    clients: list[Any] = []

    def make(kubeconfig: Path | None = None) -> Any:
        client = kube_cluster.api_client(kubeconfig)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
