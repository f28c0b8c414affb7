"""Shared by the chart tests: paths, and small readers of rendered manifests."""

from __future__ import annotations

import base64
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sipphelpers import ManagedProcess

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


class SecretVolume:
    """What the kubelet does for a Secret volume, for proxies run as local processes: the
    Secret's keys as files in ``directory``, brought up to date every ``interval`` seconds, each
    file replaced whole (a rename, as the kubelet's symlink swap: never half a file).
    ``read()`` gives the Secret's JSON, or None while it does not exist."""

    def __init__(
        self, read: Callable[[], dict[str, Any] | None], directory: Path, interval: float = 0.5
    ) -> None:
        self.read = read
        self.directory = directory
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sync(self) -> bool:
        """Copy the Secret once; whether it exists."""
        found = self.read()
        if found is None:
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        for key, value in (found.get("data") or {}).items():
            fresh = self.directory / f".{key}.new"
            fresh.write_bytes(base64.b64decode(value))
            fresh.replace(self.directory / key)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sync()

    def __enter__(self) -> SecretVolume:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_for(what: str, check: Callable[[], Any], timeout: float, *logs: ManagedProcess) -> Any:
    """What ``check`` finds once it finds something, failing early when a process in ``logs``
    exits and, at the timeout, with their last lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        for process in logs:
            assert process.running(), f"{process.name} exited:\n{process.output_tail(40)}"
        time.sleep(0.1)
    tails = "\n".join(p.output_tail(30) for p in logs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
