"""The proxies' Secret on the real API server: made and rotated by the operator, never by Helm.

The chart is installed with ``helm install``; its operator and proxy run as local processes
from the release's own command lines and ServiceAccounts (no kubelet here: `SecretVolume`
does what it does for a Secret volume).

- a rotation asked by annotation adds a key, makes it sign once settled, the proxy re-reads
  it, and a dialog whose Record-Route was signed before the rotation still routes after it;
- a user's own Secret (proxy.secret.existingSecret) is never touched, and the operator can
  neither read it nor make another one (RBAC, and the chart's admission policy);
- an upgrade from a chart that rendered the Secret keeps its keys when the Secret carries
  ``helm.sh/resource-policy: keep`` (docs/install.md), and loses it without.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import shutil
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from charthelpers import CHART, REPO, SecretVolume, container, expand, find, wait_for

from kubecluster import KubeCluster, KubeCommandError
from sipdispatch.api.routekeys import fingerprint, parse_keys
from sipphelpers import ManagedProcess, free_port

pytestmark = pytest.mark.k8s

Kubectl = Callable[..., str]
ROUTE_KEY = "record-route-secret"
GATEWAY_IP = "127.0.0.2"
STATE = "sipdispatch.io/route-keys"
ROTATE = "sipdispatch.io/rotate-route-keys"
#: the Secret template of the chart before the operator kept the Secret (a fixture: that chart
#: version is history, and an upgrade from it is what users will do)
RENDERED_SECRET = Path(__file__).resolve().parent / "fixtures" / "secret-rendered-by-helm.yaml"


def _install_crds(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))

    def established() -> bool:
        # kubectl wait fails outright on a CRD that has no status yet: ask until it has one
        try:
            kubectl("wait", "--for=condition=Established", "crd/dispatchersets.sipdispatch.io",
                    "crd/dispatcherreports.sipdispatch.io", "--timeout=5s")  # fmt: skip
        except KubeCommandError:
            return False
        return True

    wait_for("the CRDs", established, 60)


@pytest.fixture
def release(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[Callable[[str], str]]:
    names: list[str] = []

    def track(name: str) -> str:
        names.append(name)
        return name

    yield track
    for name in names:
        kube_cluster.helm("uninstall", name, "-n", kube_namespace, "--ignore-not-found")


def _secret(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(
            kubectl("get", "secret", name, "-n", namespace, "-o", "json")
        )
    except KubeCommandError:
        return None
    return found


def _route_keys(secret: dict[str, Any]) -> list[str]:
    text = base64.b64decode(secret["data"][ROUTE_KEY]).decode()
    return [key.decode() for key in parse_keys(text, "the Secret")]


def _read(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _command(deployment: dict[str, Any], name: str, env: dict[str, str]) -> list[str]:
    each = container(deployment, name)
    program = shutil.which(each["command"][0], path=str(Path(sys.executable).parent))
    assert program, each["command"]
    return [program, *expand(each["args"], env)]


def _manifest(kube_cluster: KubeCluster, name: str, namespace: str) -> list[dict[str, Any]]:
    import yaml  # noqa: PLC0415

    text = kube_cluster.helm("get", "manifest", name, "-n", namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _key_metric(key: str, use: str) -> str:
    return f'sipdispatch_route_keys{{fingerprint="{fingerprint(key.encode())}",use="{use}"}} 1.0'


# ----------------------------------------------------------------------------- a SIP gateway


class Gateway:
    """A UDP gateway that answers every request but ACK with 200 and keeps all but OPTIONS."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Not the caller's address: a set's members (by IP) are never dispatched to it.
        self.sock.bind((GATEWAY_IP, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if method != "ACK" and not text.startswith("SIP/2.0"):
                self.sock.sendto(_answer(text, self.port), peer)
            if method != "OPTIONS":
                self.requests.put(text)

    def next(self, method: str, call_id: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = self.requests.get(timeout=0.2)
            except queue.Empty:
                continue
            if text.startswith(method + " ") and f"Call-ID: {call_id}" in text:
                return text
        raise AssertionError(f"the gateway got no {method} of {call_id} in {timeout}s")

    def __enter__(self) -> Gateway:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _headers(text: str, name: str) -> list[str]:
    return re.findall(rf"(?im)^{name}:[ \t]*(.*?)\r?$", text)


def _answer(request: str, port: int) -> bytes:
    lines = ["SIP/2.0 200 OK"]
    for name in ("Via", "Record-Route", "From"):
        lines += [f"{name}: {value}" for value in _headers(request, name)]
    to = _headers(request, "To")[0]
    lines += [
        f"To: {to}" + ("" if ";tag=" in to else ";tag=gw1"),
        f"Call-ID: {_headers(request, 'Call-ID')[0]}",
        f"CSeq: {_headers(request, 'CSeq')[0]}",
        f"Contact: <sip:gateway@{GATEWAY_IP}:{port}>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _request(method: str, uri: str, call_id: str, cseq: int, port: int, *extra: str) -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id}-{cseq}",
        "Max-Forwards: 70",
        *extra,
        "From: <sip:caller@example.com>;tag=caller1",
        "To: <sip:gateway@example.com>" + (";tag=gw1" if method != "INVITE" else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:caller@127.0.0.1:{port}>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answers(sock: socket.socket, within: float) -> list[str]:
    """Status lines the caller got within ``within`` seconds."""
    found: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        found.append(data.decode(errors="replace").split("\r\n", 1)[0])
    return found


# ----------------------------------------------------------------------------- the tests


def test_a_rotation_keeps_the_routes_signed_before_it(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    release: Callable[[str], str],
    tmp_path: Path,
) -> None:
    ns, kubectl = kube_namespace, kube_cluster.kubectl
    _install_crds(kubectl)
    sip_port, control_port, health_port = free_port(), free_port(), free_port()
    name = release("keys")
    kube_cluster.helm(
        "install", name, str(CHART), "-n", ns,
        "--set", f"operator.watchNamespaces={{{ns}}}",
        "--set", f"operator.healthPort={health_port}",
        "--set", f"operator.metricsPort={free_port()}",
        "--set", f"proxy.sipPort={sip_port}",
        "--set", f"proxy.controlPort={control_port}",
        "--set", "operator.routeKeys.settle=3s",
    )  # fmt: skip
    docs = _manifest(kube_cluster, name, ns)
    assert not [d for d in docs if d["kind"] == "Secret"], "Helm renders no Secret"
    operator = find(docs, "Deployment", f"{name}-sipdispatch-operator")
    proxy = find(docs, "Deployment", f"{name}-sipdispatch-proxy")
    secret_name = f"{name}-sipdispatch-secret"
    mount = container(proxy, "proxy")["volumeMounts"][0]["mountPath"]
    env = {"POD_NAME": f"{name}-proxy-1", "POD_NAMESPACE": ns, "POD_IP": "127.0.0.1"}
    secret_dir = tmp_path / "secret"
    accounts = {
        part: kube_cluster.serviceaccount_kubeconfig(
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
            ns,
            tmp_path / f"{part}.kubeconfig",
            create=False,
        )
        for part, deployment in (("operator", operator), ("proxy", proxy))
    }
    operator_argv = _command(operator, "operator", {"POD_NAME": "op-1", "POD_NAMESPACE": ns})
    proxy_argv = [arg.replace(mount, str(secret_dir)) for arg in _command(proxy, "proxy", env)]
    operator_process = ManagedProcess(
        "operator", [*operator_argv, f"--kubeconfig={accounts['operator']}"], tmp_path
    )
    proxy_process = ManagedProcess(
        "proxy", [*proxy_argv, f"--kubeconfig={accounts['proxy']}"], tmp_path
    )
    control = f"http://127.0.0.1:{control_port}"
    volume = SecretVolume(lambda: _secret(kubectl, ns, secret_name), secret_dir)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller_port = caller.getsockname()[1]
    try:
        with Gateway() as gateway:
            operator_process.spawn()
            made = wait_for("the operator's Secret", lambda: _secret(kubectl, ns, secret_name),
                         30, operator_process)  # fmt: skip
            [old] = _route_keys(made)
            assert set(made["data"]) == {ROUTE_KEY, "control-token"}
            state = json.loads(made["metadata"]["annotations"][STATE])
            assert [k["fingerprint"] for k in state["keys"]] == [fingerprint(old.encode())]
            volume.sync()
            with volume:
                proxy_process.spawn()
                processes = (operator_process, proxy_process)
                dispatcherset = {
                    "apiVersion": "sipdispatch.io/v1alpha1",
                    "kind": "DispatcherSet",
                    "metadata": {"name": "gateways"},
                    "spec": {
                        "setId": 1,
                        "destinations": [{"uri": f"sip:{GATEWAY_IP}:{gateway.port}"}],
                    },
                }
                kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(dispatcherset))
                wait_for("the table in the proxy",
                      lambda: f"{GATEWAY_IP}:{gateway.port}" in _read(f"{control}/v1/destinations"),
                      30, *processes)  # fmt: skip

                # A call set up before the rotation: its Record-Route is signed with OLD.
                target = f"sip:gateway@127.0.0.1:{sip_port}"
                caller.sendto(_request("INVITE", target, "before", 1, caller_port),
                              ("127.0.0.1", sip_port))  # fmt: skip
                invite = gateway.next("INVITE", "before")
                [route] = _headers(invite, "Record-Route")
                assert "sig=" in route

                # Rotate now, as a user would.
                kubectl("annotate", "secret", secret_name, "-n", ns, f"{ROTATE}=first")

                def rotated() -> list[str] | None:
                    found = _secret(kubectl, ns, secret_name)
                    keys = _route_keys(found) if found else []
                    return keys if len(keys) == 2 and keys[1] == old else None

                new, _ = wait_for("the new key to sign", rotated, 40, *processes)
                signing = _key_metric(new, "signing")
                accepting = _key_metric(old, "accepting")
                wait_for("the proxy to re-read the keys",
                      lambda: signing in (m := _read(f"{control}/metrics")) and accepting in m,
                      20, *processes)  # fmt: skip
                stored = _secret(kubectl, ns, secret_name) or {}
                records = json.loads(stored["metadata"]["annotations"][STATE])
                assert records["rotateRequest"] == "first"
                by_print = {k["fingerprint"]: k for k in records["keys"]}
                assert "retired" in by_print[fingerprint(old.encode())]
                assert "signingSince" in by_print[fingerprint(new.encode())]

                # The BYE of the call set up before: routed with the route signed by OLD.
                caller.sendto(
                    _request("BYE", f"sip:gateway@{GATEWAY_IP}:{gateway.port}", "before", 2,
                             caller_port, f"Route: {route}"),
                    ("127.0.0.1", sip_port),
                )  # fmt: skip
                bye = gateway.next("BYE", "before")
                assert bye.startswith(f"BYE sip:gateway@{GATEWAY_IP}")
                # A forged route (OLD's signature edited) is still refused.
                forged = re.sub(r"sig=([0-9a-f])", lambda m: "sig=" + "0123456789abcdef"[
                    (int(m.group(1), 16) + 1) % 16], route)  # fmt: skip
                _answers(caller, 0.3)
                caller.sendto(
                    _request("BYE", f"sip:gateway@{GATEWAY_IP}:{gateway.port}", "before", 3,
                             caller_port, f"Route: {forged}"),
                    ("127.0.0.1", sip_port),
                )  # fmt: skip
                assert [line for line in _answers(caller, 3) if line.startswith("SIP/2.0 403")]
                # A call set up now is signed with NEW: its BYE routes too.
                caller.sendto(_request("INVITE", target, "after", 1, caller_port),
                              ("127.0.0.1", sip_port))  # fmt: skip
                [route_after] = _headers(gateway.next("INVITE", "after"), "Record-Route")
                assert route_after != route
                caller.sendto(
                    _request("BYE", f"sip:gateway@{GATEWAY_IP}:{gateway.port}", "after", 2,
                             caller_port, f"Route: {route_after}"),
                    ("127.0.0.1", sip_port),
                )  # fmt: skip
                gateway.next("BYE", "after")
                for process in processes:
                    log = process.stderr_path.read_text(errors="replace")
                    assert "Forbidden" not in log, f"{process.name} was refused:\n{log[-3000:]}"
    finally:
        caller.close()
        for process in (proxy_process, operator_process):
            if process.proc is not None:
                process.stop()


def test_a_users_own_secret_is_never_touched(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    release: Callable[[str], str],
    tmp_path: Path,
) -> None:
    ns, kubectl = kube_namespace, kube_cluster.kubectl
    _install_crds(kubectl)
    keys = "a" * 64
    kubectl("create", "secret", "generic", "mine", "-n", ns,
            f"--from-literal={ROUTE_KEY}={keys}", "--from-literal=control-token=token")  # fmt: skip
    kubectl("annotate", "secret", "mine", "-n", ns, f"{ROTATE}=please")
    before = _secret(kubectl, ns, "mine") or {}
    health_port = free_port()
    name = release("own")
    kube_cluster.helm(
        "install", name, str(CHART), "-n", ns,
        "--set", "proxy.secret.existingSecret=mine",
        "--set", f"operator.watchNamespaces={{{ns}}}",
        "--set", f"operator.healthPort={health_port}",
        "--set", f"operator.metricsPort={free_port()}",
    )  # fmt: skip
    docs = _manifest(kube_cluster, name, ns)
    operator = find(docs, "Deployment", f"{name}-sipdispatch-operator")
    argv = _command(operator, "operator", {"POD_NAME": "op-1", "POD_NAMESPACE": ns})
    assert not [arg for arg in argv if arg.startswith("--route-keys-secret")]
    account = kube_cluster.serviceaccount_kubeconfig(
        f"{name}-sipdispatch-operator", ns, tmp_path / "operator.kubeconfig", create=False
    )
    process = ManagedProcess("operator", [*argv, f"--kubeconfig={account}"], tmp_path)
    try:
        process.spawn()
        wait_for("the operator's liveness endpoint",
              lambda: "200" if _read(f"http://127.0.0.1:{health_port}/healthz") else "",
              30, process)  # fmt: skip
        time.sleep(12)  # longer than the operator's Secret check interval (10 s)
        assert process.running(), process.output_tail(30)
    finally:
        process.stop()
    after = _secret(kubectl, ns, "mine") or {}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["data"] == before["data"]
    # The operator may not even read it, nor make a Secret of its own.
    for verb, what in (("get", "secrets/mine"), ("create", "secrets"), ("list", "secrets")):
        can_i = kube_cluster.run("kubectl", "auth", "can-i", verb, what, "-n", ns,
                                 kubeconfig=account, check=False)  # fmt: skip
        assert can_i.stdout.strip() == "no", (verb, what)


def test_the_operator_may_make_no_other_secret(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    release: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """RBAC cannot name a Secret to be created; the chart's admission policy does."""
    ns, kubectl = kube_namespace, kube_cluster.kubectl
    _install_crds(kubectl)
    name = release("reach")
    kube_cluster.helm("install", name, str(CHART), "-n", ns,
                      "--set", f"operator.watchNamespaces={{{ns}}}")  # fmt: skip
    account = kube_cluster.serviceaccount_kubeconfig(
        f"{name}-sipdispatch-operator", ns, tmp_path / "operator.kubeconfig", create=False
    )

    def create(secret: str, *extra: str) -> str:
        proc = kube_cluster.run(
            "kubectl", "create", "secret", "generic", secret, "-n", ns,
            "--from-literal=k=v", *extra, kubeconfig=account, check=False,
        )  # fmt: skip
        return "" if proc.returncode == 0 else proc.stderr

    can_i = kube_cluster.run("kubectl", "auth", "can-i", "create", "secrets", "-n", ns,
                             kubeconfig=account, check=False)  # fmt: skip
    assert can_i.stdout.strip() == "yes", "RBAC alone would allow any name"
    wait_for("the policy to be in force", lambda: create("stolen", "--dry-run=server"), 30)
    refused = create("stolen")
    assert "ValidatingAdmissionPolicy" in refused, refused
    assert f"writes only the proxies' Secret {ns}/{name}-sipdispatch-secret" in refused
    assert create(f"{name}-sipdispatch-secret") == "", "its own Secret: allowed"
    for verb, what in (("get", f"secrets/{name}-sipdispatch-secret"),
                       ("patch", f"secrets/{name}-sipdispatch-secret")):  # fmt: skip
        can_i = kube_cluster.run("kubectl", "auth", "can-i", verb, what, "-n", ns,
                                 kubeconfig=account, check=False)  # fmt: skip
        assert can_i.stdout.strip() == "yes", (verb, what)
    for verb, what in (("get", "secrets/other"), ("list", "secrets"), ("watch", "secrets")):
        can_i = kube_cluster.run("kubectl", "auth", "can-i", verb, what, "-n", ns,
                                 kubeconfig=account, check=False)  # fmt: skip
        assert can_i.stdout.strip() == "no", (verb, what)


def _old_chart(tmp_path: Path) -> Path:
    """This chart with the Secret template it had before the operator kept the Secret."""
    old = tmp_path / "sipdispatch"
    shutil.copytree(CHART, old)
    shutil.copy(RENDERED_SECRET, old / "templates" / "secret.yaml")
    return old


def test_an_upgrade_from_a_chart_that_rendered_the_secret_keeps_its_keys(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    release: Callable[[str], str],
    tmp_path: Path,
) -> None:
    ns, kubectl, helm = kube_namespace, kube_cluster.kubectl, kube_cluster.helm
    _install_crds(kubectl)
    old_chart = _old_chart(tmp_path)
    # With the annotation docs/install.md asks for: kept, keys and all.
    name = release("kept")
    helm("install", name, str(old_chart), "-n", ns)
    secret_name = f"{name}-sipdispatch-secret"
    first = _secret(kubectl, ns, secret_name) or {}
    assert first["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    kubectl("annotate", "secret", secret_name, "-n", ns, "helm.sh/resource-policy=keep")
    helm("upgrade", name, str(CHART), "-n", ns, "--set", "operator.routeKeys.rotateEvery=0")
    kept = _secret(kubectl, ns, secret_name) or {}
    assert kept["data"] == first["data"]
    # The operator takes it as it stands: its keys stay, their times are recorded.
    docs = _manifest(kube_cluster, name, ns)
    operator = find(docs, "Deployment", f"{name}-sipdispatch-operator")
    health_port = free_port()
    argv = _command(operator, "operator", {"POD_NAME": "op-1", "POD_NAMESPACE": ns})
    argv = [arg for arg in argv if not arg.startswith(("--liveness", "--metrics"))]
    account = kube_cluster.serviceaccount_kubeconfig(
        f"{name}-sipdispatch-operator", ns, tmp_path / "operator.kubeconfig", create=False
    )
    process = ManagedProcess(
        "operator",
        [*argv, f"--liveness=http://127.0.0.1:{health_port}/healthz", f"--kubeconfig={account}"],
        tmp_path,
    )
    try:
        process.spawn()
        adopted = wait_for(
            "the operator's record of the keys",
            lambda: (
                (s := _secret(kubectl, ns, secret_name) or {})
                and STATE in (s["metadata"].get("annotations") or {})
                and s
            ),
            30,
            process,
        )
    finally:
        process.stop()
    assert adopted["data"] == first["data"]
    [key] = _route_keys(adopted)
    state = json.loads(adopted["metadata"]["annotations"][STATE])
    assert [k["fingerprint"] for k in state["keys"]] == [fingerprint(key.encode())]
    # helm uninstall leaves it too (Helm no longer owns it).
    helm("uninstall", name, "-n", ns)
    assert (_secret(kubectl, ns, secret_name) or {}).get("data") == first["data"]
    # Without the annotation, Helm deletes what left the chart: the keys would be gone.
    name = release("lost")
    helm("install", name, str(old_chart), "-n", ns)
    assert _secret(kubectl, ns, f"{name}-sipdispatch-secret")
    helm("upgrade", name, str(CHART), "-n", ns)
    assert _secret(kubectl, ns, f"{name}-sipdispatch-secret") is None
