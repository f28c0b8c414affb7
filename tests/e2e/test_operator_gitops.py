"""What GitOps tools see, on the real API server: a fresh install is ready before any
DispatcherSet exists (Flux and Argo CD wait for that), and a DispatcherSet's health, as
kstatus computes it (Flux, Helm's kstatus wait; the library built from its Go module) and as
the Argo CD health check in ``examples/gitops/`` says it (run by Lua from Debian's packages),
follows what the operator did with the current generation: served is Current / Healthy, a
refused spec is Failed / Degraded although the previous one keeps serving."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeproc import REPO, KubeProxy, KubeStack, apply, condition, dispatcherset, get, wait_for

from kubecluster import KubeCluster

pytestmark = pytest.mark.k8s

TRUNK = "sip:127.0.0.10:5060"  # probing is off below: nothing needs to listen there
ARGOCD_CM = REPO / "examples" / "gitops" / "argocd-cm.yaml"
ARGOCD_KEY = "resource.customizations.health.sipdispatch.io_DispatcherSet"
LUA = shutil.which("lua5.4") or "lua5.4"


@pytest.fixture
def stack(kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path) -> Iterator[KubeStack]:
    started = KubeStack.start(kube_cluster, kube_namespace, tmp_path)
    try:
        yield started
    finally:
        refused = started.close()
    assert not refused, started.logs()


def readyz(proxy: KubeProxy) -> int:
    try:
        with urllib.request.urlopen(f"{proxy.control_url}/readyz", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def kstatus(cluster: KubeCluster, obj: dict[str, Any]) -> str:
    """What kstatus computes for ``obj``: Current, InProgress, Failed, ..."""
    out = subprocess.run(
        [str(cluster.bin_dir / "kstatus")],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\t")[0]


def lua_literal(value: Any) -> str:
    """``value`` (decoded JSON) as a Lua expression: the object Argo CD hands the script."""
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid Lua string literal here


def argocd_health(obj: dict[str, Any], tmp_path: Path) -> str:
    """The status Argo CD shows for ``obj``, from the shipped health check."""
    check = yaml.safe_load(ARGOCD_CM.read_text())["data"][ARGOCD_KEY]
    script = tmp_path / "health.lua"
    script.write_text(
        f"obj = {lua_literal(obj)}\n"
        f"local function check()\n{check}\nend\n"
        "local hs = check()\nprint(hs.status)\n"
    )
    out = subprocess.run([LUA, str(script)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_ready_on_install_then_health_follows_the_generation(
    stack: KubeStack, kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    # A fresh install: no DispatcherSet names the proxy, yet every replica is ready.
    proxies = [stack.start_proxy("proxy-0"), stack.start_proxy("proxy-1")]
    assert [readyz(p) for p in proxies] == [200, 200]
    assert [p.sets() for p in proxies] == [[], []]

    def dset() -> dict[str, Any]:
        return get(stack.kubectl, stack.namespace, "dispatcherset", "trunks")

    def served(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        return (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and condition(status, "Ready").get("status") == "True"
        )

    spec = {"setId": 1, "destinations": [{"uri": TRUNK}], "probing": {"mode": "off"}}
    apply(stack.kubectl, stack.namespace, dispatcherset("trunks", spec))
    good = wait_for("the set served and reported", lambda: served(dset()) and dset(), 20)
    assert all(p.sets() == [1] for p in proxies)
    assert kstatus(kube_cluster, good) == "Current"
    assert argocd_health(good, tmp_path) == "Healthy"

    # Past the schema, refused by the operator: one destination written twice.
    bad = {**spec, "destinations": [{"uri": TRUNK}, {"uri": "SIP:127.0.0.10:5060"}]}
    apply(stack.kubectl, stack.namespace, dispatcherset("trunks", bad))
    refused = wait_for(
        "the refusal in the status",
        lambda: condition(dset().get("status") or {}, "Stalled").get("status") == "True" and dset(),
        20,
    )
    status = refused["status"]
    assert status["observedGeneration"] == refused["metadata"]["generation"] == 2
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert "the table keeps serving generation 1" in condition(status, "Stalled")["message"]
    assert kstatus(kube_cluster, refused) == "Failed"
    assert argocd_health(refused, tmp_path) == "Degraded"
    assert all(p.destinations() == {TRUNK: "AX"} for p in proxies)  # generation 1 serves on

    fixed = {**spec, "destinations": [{"uri": "sip:127.0.0.11:5060"}]}
    apply(stack.kubectl, stack.namespace, dispatcherset("trunks", fixed))
    current = wait_for(
        "the fixed spec served",
        lambda: served(dset()) and dset()["metadata"]["generation"] == 3 and dset(),
        20,
    )
    assert condition(current["status"], "Stalled")["status"] == "False"
    assert kstatus(kube_cluster, current) == "Current"
    assert argocd_health(current, tmp_path) == "Healthy"
    wait_for(
        "both replicas on generation 3",
        lambda: all("sip:127.0.0.11:5060" in p.destinations() for p in proxies),
        10,
    )
