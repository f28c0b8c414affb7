"""sipdispatch.kube's credentials against the real API server: client certificates, tokens,
the pod's ServiceAccount token as kubelet rotates it, exec plugins whose tokens expire."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from kubecluster import KubeCluster
from kubeconfigs import exec_plugin, kubeconfig, runs
from sipdispatch.kube import CONFIG_MAP, Kube, KubeError, locate, objects

pytestmark = pytest.mark.k8s


async def identity(kube: Kube, namespace: str) -> str:
    """Who the API server takes ``kube`` for: the user a refusal names, else "allowed"."""
    try:
        await objects.get(kube, CONFIG_MAP, namespace, "nothing-here")
    except KubeError as exc:
        if exc.status == 404:
            return "allowed"
        if exc.status != 403:
            raise
        found = re.search(r'User "([^"]+)"', exc.message)
        return found.group(1) if found else exc.message
    raise AssertionError("a ConfigMap that does not exist was found")


def token(cluster: KubeCluster, namespace: str, name: str, duration: str = "1h") -> str:
    account = cluster.run("kubectl", "get", "serviceaccount", name, "-n", namespace, check=False)
    if account.returncode != 0:
        cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    return cluster.kubectl(
        "create", "token", name, "-n", namespace, f"--duration={duration}"
    ).strip()


async def test_client_certificates_and_tokens_from_kubeconfigs(
    admin_kubeconfig: Path,
    kube_namespace: str,
    serviceaccount_kubeconfig: Callable[..., Path],
) -> None:
    admin = Kube(locate(admin_kubeconfig))  # client certificate
    reader = Kube(locate(serviceaccount_kubeconfig("nobody", kube_namespace)))
    try:
        assert await identity(admin, kube_namespace) == "allowed"
        who = await identity(reader, kube_namespace)
        assert who == f"system:serviceaccount:{kube_namespace}:nobody"
    finally:
        await admin.close()
        await reader.close()


async def test_a_rotated_serviceaccount_token_is_used_at_once(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    # The pod's view: the Service's address in the environment, the token, CA and namespace
    # files in the ServiceAccount directory (kubelet replaces the token file by a rename).
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(kube_cluster.ca_file.read_bytes())
    (account / "namespace").write_text(kube_namespace)
    (account / "token").write_text(token(kube_cluster, kube_namespace, "first"))
    host, port = kube_cluster.server.removeprefix("https://").rsplit(":", 1)
    environ = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    login = locate(environ=environ, service_account=account)
    assert login.namespace == kube_namespace
    kube = Kube(login)
    try:
        assert await identity(kube, kube_namespace) == (
            f"system:serviceaccount:{kube_namespace}:first"
        )
        rotated = account / "token.new"
        rotated.write_text(token(kube_cluster, kube_namespace, "second"))
        os.replace(rotated, account / "token")
        assert await identity(kube, kube_namespace) == (
            f"system:serviceaccount:{kube_namespace}:second"
        )
    finally:
        await kube.close()


async def test_an_exec_plugin_runs_again_when_its_token_expires(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token(kube_cluster, kube_namespace, "first"))
    user, plugin_runs = exec_plugin(tmp_path, token_file, expires_in=3600)
    config = kubeconfig(
        tmp_path / "config", kube_cluster.server, user, ca_file=kube_cluster.ca_file
    )
    login = locate(config)
    assert runs(plugin_runs) == 0  # locating reads the file, runs nothing
    kube = Kube(login)
    try:
        assert await identity(kube, kube_namespace) == (
            f"system:serviceaccount:{kube_namespace}:first"
        )
        assert await identity(kube, kube_namespace) == (
            f"system:serviceaccount:{kube_namespace}:first"
        )
        assert runs(plugin_runs) == 1  # the token is good for an hour: kept
        credentials = await login.credentials()  # what kopf gets: a fresh run, with expiry
        assert credentials.token == token_file.read_text()
        assert credentials.expires is not None
        assert runs(plugin_runs) == 2
    finally:
        await kube.close()

    # A token about to expire: the plugin runs before each request, and the token it hands
    # out next is the one used.
    short, short_runs = exec_plugin(tmp_path / "short", token_file, expires_in=5)
    kube = Kube(
        locate(
            kubeconfig(
                tmp_path / "short.config", kube_cluster.server, short, ca_file=kube_cluster.ca_file
            )
        )
    )
    try:
        await identity(kube, kube_namespace)
        token_file.write_text(token(kube_cluster, kube_namespace, "second"))
        assert await identity(kube, kube_namespace) == (
            f"system:serviceaccount:{kube_namespace}:second"
        )
        assert runs(short_runs) == 3  # loading, then before each of the two requests
    finally:
        await kube.close()
