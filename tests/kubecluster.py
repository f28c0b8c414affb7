"""A real Kubernetes control plane for tests: etcd + kube-apiserver started by hack/test-cluster.

The binaries (kube-apiserver, kubectl, etcd, helm) are built from Go modules by
``hack/test-cluster build`` and cached in ``~/.cache/sipdispatch/k8sbin/<version>/``. There are
no controllers and no kubelet: no garbage collection, namespaces stay ``Terminating`` after
deletion, pods never run. Run the operator and the proxy as local processes against the API
server (``KubeCluster.env()`` gives them ``KUBECONFIG`` and ``PATH``).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "hack" / "test-cluster"


class KubeCommandError(RuntimeError):
    """A kubectl or helm command failed; carries its exit status and stderr."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{shlex.join(argv)} exited with {returncode}:\n{stderr.strip() or stdout.strip()}"
        )


def _script(*args: str, timeout: float) -> str:
    """Run hack/test-cluster; return its stdout, raise with its stderr on failure."""
    proc = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"hack/test-cluster {shlex.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stderr.strip()}"
        )
    return proc.stdout


def is_built() -> bool:
    """Whether the cached binaries are up to date (cheap: no Go toolchain involved)."""
    return subprocess.run([str(SCRIPT), "is-built"], check=False).returncode == 0


def build(*, stream: bool = False, timeout: float = 3600) -> Path:
    """Build (or find cached) binaries; return their directory. Fails loudly, never skips.

    With ``stream``, the build's progress goes to this process's stderr as it happens.
    """
    if not stream:
        return Path(_script("build", timeout=timeout).strip().splitlines()[-1])
    proc = subprocess.run(
        [str(SCRIPT), "build"],
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/test-cluster build failed ({proc.returncode}); see above")
    return Path(proc.stdout.strip().splitlines()[-1])


def _read_state(state_dir: Path) -> dict[str, str]:
    state: dict[str, str] = {}
    for line in (state_dir / "state.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            state[key] = shlex.split(value)[0] if value else ""
    return state


@dataclass(frozen=True)
class KubeCluster:
    """A running control plane and the tools to talk to it (as admin unless told otherwise)."""

    state_dir: Path
    kubeconfig: Path
    bin_dir: Path
    server: str
    ca_file: Path
    kube_version: str
    etcd_version: str
    helm_version: str
    helm_home: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "helm_home", self.state_dir / "helm")

    # -- processes -------------------------------------------------------------------------

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment for a subprocess (operator, proxy, scripts) talking to this cluster."""
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            env[var] = str(self.helm_home / sub)
        return env

    def run(
        self,
        tool: str,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a tool from the binary dir (kubectl, helm) with KUBECONFIG set."""
        argv = [str(self.bin_dir / tool), *args]
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(kubeconfig),
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise KubeCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        timeout: float = 60,
    ) -> str:
        """``kubectl ARGS`` as admin (or as ``kubeconfig``); stdout, or KubeCommandError."""
        return self.run(
            "kubectl", *args, kubeconfig=kubeconfig, input=input, timeout=timeout
        ).stdout

    def helm(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> str:
        """``helm ARGS`` as admin (or as ``kubeconfig``); stdout, or KubeCommandError."""
        return self.run("helm", *args, kubeconfig=kubeconfig, timeout=timeout).stdout

    # -- objects ---------------------------------------------------------------------------

    def create_namespace(self, hint: str = "test") -> str:
        """Create a namespace with a unique, valid name derived from ``hint``."""
        base = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].strip("-") or "test"
        name = f"{base}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        return name

    def delete_namespace(self, name: str) -> None:
        """Ask for deletion. With no namespace controller it stays Terminating; that is fine."""
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")

    def serviceaccount_kubeconfig(
        self,
        name: str,
        namespace: str,
        path: Path | None = None,
        *,
        create: bool = True,
        duration: str = "2h",
    ) -> Path:
        """A kubeconfig authenticating as ServiceAccount ``namespace/name`` (a bound token).

        Creates the ServiceAccount first unless it exists (or ``create=False``). The file is
        written to ``path`` (default: a new file in the state dir).
        """
        if create:
            exists = self.run(
                "kubectl", "get", "serviceaccount", name, "-n", namespace, check=False
            )
            if exists.returncode != 0:
                self.kubectl("create", "serviceaccount", name, "-n", namespace)
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).strip()
        if path is None:
            fd, tmp = tempfile.mkstemp(
                prefix=f"sa-{namespace}-{name}-", suffix=".kubeconfig", dir=self.state_dir
            )
            os.close(fd)
            path = Path(tmp)
        path.write_text(self._kubeconfig_yaml(f"{namespace}-{name}", f"token: {token}"))
        path.chmod(0o600)
        return path

    def _kubeconfig_yaml(self, user: str, *user_fields: str) -> str:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        lines = [
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            "- name: sipdispatch-test",
            "  cluster:",
            f"    server: {self.server}",
            f"    certificate-authority-data: {ca}",
            "contexts:",
            f"- name: {user}",
            "  context:",
            "    cluster: sipdispatch-test",
            f"    user: {user}",
            f"current-context: {user}",
            "users:",
            f"- name: {user}",
            "  user:",
            *(f"    {f}" for f in user_fields),
        ]
        return "\n".join(lines) + "\n"

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for ``kubeconfig`` (admin by default).

        Close it when done (``with cluster.api_client() as api: ...``).
        """
        from kubernetes import config  # noqa: PLC0415 (only k8s tests pay for the import)

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))


def start(state_dir: Path | None = None, *, owner_pid: int | None = None) -> KubeCluster:
    """Start etcd + kube-apiserver (``hack/test-cluster up``); wait until ready.

    ``state_dir`` defaults to a fresh directory on /dev/shm. With ``owner_pid``, a watchdog
    stops the control plane when that process exits (so a killed test run leaves nothing).
    """
    if state_dir is None:
        shm = Path("/dev/shm")
        tmp_root = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        state_dir = Path(tempfile.mkdtemp(prefix="sipdispatch-k8s-", dir=tmp_root))
    args = ["up"]
    if owner_pid is not None:
        args += ["--owner", str(owner_pid)]
    out = _script(*args, str(state_dir), timeout=600)
    kubeconfig = Path(out.strip().splitlines()[-1])
    state = _read_state(state_dir)
    return KubeCluster(
        state_dir=state_dir,
        kubeconfig=kubeconfig,
        bin_dir=Path(state["BIN"]),
        server=state["SERVER"],
        ca_file=Path(state["CA_FILE"]),
        kube_version=state["KUBE_VERSION"],
        etcd_version=state["ETCD_VERSION"],
        helm_version=state["HELM_VERSION"],
    )


def stop(cluster: KubeCluster) -> None:
    """Stop exactly the processes ``start`` started and remove the state dir."""
    _script("down", str(cluster.state_dir), timeout=120)
