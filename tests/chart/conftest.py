"""Fixtures of the chart tests (helm/sipdispatch).

- ``helm_cli(*args, check=True) -> CompletedProcess``: the helm binary built by
  ``hack/test-cluster`` (v3.22, with the Kubernetes version of the test control plane compiled
  in, so ``helm template`` and ``helm lint`` check ``kubeVersion`` against it), with no cluster:
  its own empty HELM_*_HOME and a KUBECONFIG that points nowhere.
- ``render(*args, release=, namespace=) -> list[dict]``: ``helm template`` of the chart, parsed.

Tests that install into the real control plane use the ``helm`` / ``kubectl`` fixtures of
tests/conftest.py and are marked ``k8s``. The binaries are built (or found in the cache) at
collection time by tests/conftest.py (``helm_cli`` is one of the fixtures that asks for them),
outside any test's timeout.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml
from charthelpers import CHART, Helm, Render

import kubecluster


@pytest.fixture(scope="session")
def helm_cli(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    bin_dir = kubecluster.build()  # cached by now: returns at once
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-cluster.kubeconfig"),
    )

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(bin_dir / "helm"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def render(helm_cli: Helm) -> Render:
    def run(*args: str, release: str = "sipdispatch", namespace: str = "voice") -> list[Any]:
        text = helm_cli("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]

    return run
