"""Shared by the chart tests: paths, and small readers of rendered manifests."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sipdispatch"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"

Helm = Callable[..., "subprocess.CompletedProcess[str]"]
Render = Callable[..., list[dict[str, Any]]]
Manifest = dict[str, Any]


def find(docs: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``) among ``docs``."""
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(docs: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def container(deployment: Manifest, name: str) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def expand(args: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args (an unknown name stays as written)."""
    return [
        re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)
        for arg in args
    ]


def option(args: Iterable[str], flag: str) -> list[str]:
    """Values of ``--flag=value`` arguments, in order."""
    prefix = f"{flag}="
    return [arg[len(prefix) :] for arg in args if arg.startswith(prefix)]
