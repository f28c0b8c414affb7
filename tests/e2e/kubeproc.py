"""The operator and the proxy in Kubernetes mode as real processes against the test control
plane, authenticated as the chart's own ServiceAccounts (so the chart's RBAC is what runs).

- ``install_crds(kubectl)``: ``kubectl apply -f crds/`` and wait until established.
- ``install_chart(cluster, namespace)``: the chart's ServiceAccounts and RBAC, rendered by the
  built ``helm template`` (the operator watching ``namespace`` only), applied; returns a token
  kubeconfig for each ServiceAccount.
- ``OperatorProcess`` / ``KubeProxy``: ``sipdispatch-operator`` and ``sipdispatch-proxy
  --kubernetes-table``, stopped by PID.

Where gateways listen: not on 127.0.0.x, because the API server refuses loopback addresses in
EndpointSlices ("may not be in the loopback range"); and not on this host's own address or any
other outside loopback, because test traffic may only target loopback or the project's own
test hosts in network namespaces the tests make themselves.  So the tests make one
(``tests/netns.py``: ``GatewayNet``, a namespace and a veth pair on 10.213.k.0/24), run the
sipp gateways inside it on 10.213.k.2, .3, ... (the addresses the EndpointSlices list), and run
the proxy on the root namespace's end, 10.213.k.1 (``KubeProxy(ip=net.host)``, or
``KubeStack.start(..., proxy_ip=net.host)``), listening and advertising (Via, Record-Route)
there so the gateways' answers come back over the veth; callers send to that address too.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubecluster import KubeCluster
from sipphelpers import HarnessError, ManagedProcess, free_port, sip_options_ping

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sipdispatch"
CRDS = REPO / "crds"
TABLE = "sipdispatch-table"


def _command(script: str, module: str) -> list[str]:
    found = shutil.which(script, path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", module]


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; return that, or fail saying ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def install_crds(kubectl: Callable[..., str]) -> None:
    kubectl("apply", "-f", str(CRDS))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/dispatchersets.sipdispatch.io",
        "crd/dispatcherreports.sipdispatch.io",
        "--timeout=60s",
    )


@dataclass(frozen=True)
class Identities:
    operator: Path
    proxy: Path


def render_chart(
    cluster: KubeCluster, namespace: str, *values: str, release: str = "sipdispatch"
) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for value in values:
        args += ["--set", value]
    return cluster.helm(*args)


def install_chart(cluster: KubeCluster, namespace: str, workdir: Path) -> Identities:
    rendered = render_chart(cluster, namespace, f"operator.watchNamespaces={{{namespace}}}")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=rendered)
    workdir.mkdir(parents=True, exist_ok=True)
    return Identities(
        operator=cluster.serviceaccount_kubeconfig(
            "sipdispatch-operator", namespace, workdir / "operator.kubeconfig", create=False
        ),
        proxy=cluster.serviceaccount_kubeconfig(
            "sipdispatch-proxy", namespace, workdir / "proxy.kubeconfig", create=False
        ),
    )


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


class OperatorProcess:
    """``sipdispatch-operator --standalone --namespace NS`` as the operator's ServiceAccount
    (``extra``: more arguments; ``name``: of its log files, for several in one test)."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        namespace: str,
        *extra: str,
        name: str = "operator",
    ) -> None:
        self.health_port = free_port()
        argv = [
            *_command("sipdispatch-operator", "sipdispatch.operator"),
            "--standalone",
            "--namespace",
            namespace,
            "--kubeconfig",
            str(kubeconfig),
            "--watch-timeout",
            "10",
            "--status-interval",
            "0.5",
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--log-format",
            "plain",
            *extra,
        ]
        self.process = ManagedProcess(name, argv, workdir)

    def start(self, timeout: float = 30.0) -> OperatorProcess:
        self.process.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(f"operator exited: {self.process.output_tail(40)}")
            if _get(f"http://127.0.0.1:{self.health_port}/healthz")[0] == 200:
                return self
            time.sleep(0.1)
        raise HarnessError(f"operator not alive after {timeout}s: {self.process.output_tail(40)}")

    def log(self) -> str:
        return self.process.stderr_path.read_text(errors="replace")

    def stop(self) -> int | None:
        return self.process.stop()


class KubeProxy:
    """``sipdispatch-proxy --kubernetes-table NS/sipdispatch-table`` as the proxy's
    ServiceAccount, with UDP and TCP listeners on one free port of ``ip`` (default 127.0.0.1;
    for gateways in a test network: its root-namespace end, ``GatewayNet.host``), advertised
    as such (Via, Record-Route); the control API on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        namespace: str,
        *,
        replica: str = "proxy-0",
        ip: str = "127.0.0.1",
    ) -> None:
        self.ip = ip
        self.port = free_port(self.ip)
        self.control_ip = "127.0.0.1"
        self.control_port = free_port(self.control_ip)
        self.replica = replica
        argv = [
            *_command("sipdispatch-proxy", "sipdispatch.proxy"),
            "--kubernetes-table",
            f"{namespace}/{TABLE}",
            "--kubeconfig",
            str(kubeconfig),
            "--replica",
            replica,
            "--report-interval",
            "0.5",
            "--report-heartbeat",
            "10",
            "--listen",
            f"udp:{self.ip}:{self.port}",
            "--listen",
            f"tcp:{self.ip}:{self.port}",
            "--advertise",
            self.hostport,
            "--control",
            f"{self.control_ip}:{self.control_port}",
        ]
        self.process = ManagedProcess(replica, argv, workdir)

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://{self.control_ip}:{self.control_port}"

    def start(self, ready_timeout: float = 30.0) -> KubeProxy:
        """Start; return once it answers OPTIONS (it listens only once it has a table)."""
        self.process.spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise HarnessError(f"proxy exited: {self.process.output_tail(40)}")
            if sip_options_ping(self.ip, self.port, timeout=0.3, local_ip=self.ip) == 200:
                return self
            time.sleep(0.1)
        raise HarnessError(f"proxy did not answer OPTIONS: {self.process.output_tail(40)}")

    def destinations(self) -> dict[str, str]:
        """URI -> two-letter state of every destination the proxy serves now."""
        status, body = _get(f"{self.control_url}/v1/destinations")
        if status != 200:
            return {}
        sets = json.loads(body)["sets"]
        return {d["uri"]: d["state"] for s in sets for d in s["destinations"]}

    def destination(self, uri: str) -> dict[str, Any]:
        """The control API's view of one destination (state, changedAt, latency, ...)."""
        status, body = _get(f"{self.control_url}/v1/destinations")
        if status != 200:
            return {}
        sets = json.loads(body)["sets"]
        found = [d for s in sets for d in s["destinations"] if d["uri"] == uri]
        return found[0] if found else {}

    def sets(self) -> list[int]:
        status, body = _get(f"{self.control_url}/v1/destinations")
        return [s["id"] for s in json.loads(body)["sets"]] if status == 200 else []

    def log(self) -> str:
        return self.process.stderr_path.read_text(errors="replace")

    def stop(self) -> int | None:
        return self.process.stop()


# ------------------------------------------------------------------------------ objects


def endpoint_slice(
    name: str,
    service: str,
    addresses: list[str],
    port: int,
    *,
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    pod: str | None = None,
) -> dict[str, Any]:
    """An EndpointSlice of ``service`` (no controller writes them here: tests do)."""
    conditions: dict[str, bool] = {"ready": ready}
    if serving is not None:
        conditions["serving"] = serving
    if terminating is not None:
        conditions["terminating"] = terminating
    endpoints = []
    for address in addresses:
        endpoint: dict[str, Any] = {"addresses": [address], "conditions": dict(conditions)}
        if pod is not None:
            endpoint["targetRef"] = {"kind": "Pod", "name": pod}
        endpoints.append(endpoint)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "sip", "port": port, "protocol": "UDP"}],
        "endpoints": endpoints,
    }


def service(name: str) -> dict[str, Any]:
    """A selector-less Service: its EndpointSlices are made by hand, as for external gateways."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "sip", "port": 5060, "protocol": "UDP"}]},
    }


def dispatcherset(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "sipdispatch.io/v1alpha1",
        "kind": "DispatcherSet",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply(kubectl: Callable[..., str], namespace: str, *objects: dict[str, Any]) -> None:
    docs = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(docs))


def get(kubectl: Callable[..., str], namespace: str, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json"))
    return found


def status_of(kubectl: Callable[..., str], namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get(kubectl, namespace, "dispatcherset", name).get("status") or {}
    return found


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def destination_states(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["uri"]: d for d in status.get("destinations") or []}


def events(kubectl: Callable[..., str], namespace: str, reason: str) -> list[dict[str, Any]]:
    found = json.loads(
        kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
        )
    )
    items: list[dict[str, Any]] = found["items"]
    return items


# ------------------------------------------------------------------------------ a stack


@dataclass
class KubeStack:
    """The chart's identities, the operator running in ``namespace``, and proxies started on
    demand (listening on ``proxy_ip``: a test network's ``host`` when they reach gateways in
    it); ``close()`` stops them and says whether any was refused by RBAC."""

    namespace: str
    kubectl: Callable[..., str]
    operator: OperatorProcess
    proxy_config: Path
    workdir: Path
    proxies: list[KubeProxy]
    proxy_ip: str = "127.0.0.1"

    @classmethod
    def start(
        cls, cluster: KubeCluster, namespace: str, workdir: Path, *, proxy_ip: str = "127.0.0.1"
    ) -> KubeStack:
        install_crds(cluster.kubectl)
        identities = install_chart(cluster, namespace, workdir)
        operator = OperatorProcess(workdir, identities.operator, namespace).start()
        return cls(namespace, cluster.kubectl, operator, identities.proxy, workdir, [], proxy_ip)

    def start_proxy(self, replica: str = "proxy-0") -> KubeProxy:
        proxy = KubeProxy(
            self.workdir, self.proxy_config, self.namespace, replica=replica, ip=self.proxy_ip
        )
        self.proxies.append(proxy)
        return proxy.start()

    def status(self, name: str) -> dict[str, Any]:
        return status_of(self.kubectl, self.namespace, name)

    def logs(self) -> str:
        parts = [f"--- operator\n{self.operator.log()[-4000:]}"]
        parts += [f"--- {p.replica}\n{p.log()[-4000:]}" for p in self.proxies]
        return "\n".join(parts)

    def close(self) -> list[str]:
        """Stop everything; the processes whose logs show a request refused by RBAC."""
        for proxy in self.proxies:
            proxy.stop()
        self.operator.stop()
        named = [("operator", self.operator.log())] + [(p.replica, p.log()) for p in self.proxies]
        return [name for name, text in named if "Forbidden" in text or " 403" in text]
