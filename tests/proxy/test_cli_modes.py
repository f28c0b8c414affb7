"""The proxy's command line: a standalone proxy never loads the Kubernetes client, and
Kubernetes mode's flags are checked before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipdispatch.proxy import cli

LOADED_CLIENTS = """
import sys
from sipdispatch.proxy import cli
cli.build_parser().parse_args(["--config", "table.yaml"])
print(sorted({m.split(".")[0] for m in sys.modules} & {"kubernetes", "kubernetes_asyncio"}))
"""


def test_a_standalone_proxy_does_not_load_the_kubernetes_client() -> None:
    found = subprocess.run(
        [sys.executable, "-c", LOADED_CLIENTS], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_bad_reporting_flags_are_refused_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: voice}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    code = cli.main(
        [
            "--kubernetes-table",
            "voice/sipdispatch-table",
            "--kubeconfig",
            str(kubeconfig),
            "--report-interval",
            "5",
            "--report-heartbeat",
            "1",
        ]
    )
    assert code == 2
    assert "--report-interval" in capsys.readouterr().err
