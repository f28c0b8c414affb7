"""Kubeconfig files written by tests: any user on any server (the scripted API on plain HTTP,
the test control plane), and an ``exec`` credential plugin that hands out a given token."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import yaml

__all__ = ["EXEC_API_VERSION", "exec_plugin", "kubeconfig", "runs"]

EXEC_API_VERSION = "client.authentication.k8s.io/v1"

# Prints an ExecCredential with the token in TOKEN_FILE (and, when EXPIRES_IN is set, an
# expiry that many seconds ahead); counts its runs in RUNS_FILE.
PLUGIN = """\
import datetime, json, os, sys
with open(os.environ["RUNS_FILE"], "a") as runs:
    runs.write("run\\n")
status = {"token": open(os.environ["TOKEN_FILE"]).read().strip()}
if os.environ.get("EXPIRES_IN"):
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        seconds=float(os.environ["EXPIRES_IN"]))
    status["expirationTimestamp"] = at.isoformat(timespec="seconds").replace("+00:00", "Z")
json.dump({"apiVersion": API_VERSION, "kind": "ExecCredential", "status": status}, sys.stdout)
""".replace("API_VERSION", repr(EXEC_API_VERSION))


def kubeconfig(
    path: Path,
    server: str,
    user: dict[str, object],
    *,
    ca_file: Path | None = None,
    namespace: str | None = None,
) -> Path:
    cluster: dict[str, object] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
    context: dict[str, object] = {"cluster": "test", "user": "test"}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "contexts": [{"name": "test", "context": context}],
        "current-context": "test",
        "users": [{"name": "test", "user": user}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def exec_plugin(
    directory: Path, token_file: Path, *, expires_in: float | None = None
) -> tuple[dict[str, object], Path]:
    """A kubeconfig ``user`` that runs the plugin, and the file counting its runs."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "credential-plugin.py"
    script.write_text(PLUGIN)
    runs = directory / "plugin-runs"
    env = [
        {"name": "TOKEN_FILE", "value": str(token_file)},
        {"name": "RUNS_FILE", "value": str(runs)},
    ]
    if expires_in is not None:
        env.append({"name": "EXPIRES_IN", "value": str(expires_in)})
    user = {
        "exec": {
            "apiVersion": EXEC_API_VERSION,
            "command": sys.executable,
            "args": [str(script)],
            "env": env,
            "interactiveMode": "Never",
        }
    }
    return user, runs


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
