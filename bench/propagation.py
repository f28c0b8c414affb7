"""Endpoint-change propagation: an EndpointSlice change to every proxy replica.

On the test control plane (``hack/test-cluster``: etcd + kube-apiserver as local processes,
no kubelet, no controllers) this runs what a cluster runs: the operator, as the chart's
ServiceAccount, renders a DispatcherSet and its Service's EndpointSlices into the table
ConfigMap; ``replicas`` proxies in Kubernetes mode (``--kubernetes-table``) follow that
ConfigMap with a watch.  Each change creates one EndpointSlice with a new endpoint, through the
API (no kubectl start-up in the measurement); one thread per replica polls that replica's
control API every few milliseconds until the new destination is served.  The time from the
API call to "served" is the propagation delay: API write, operator watch, render, ConfigMap
write, proxy watch, table swap.

The endpoints' addresses are in a network namespace made for the run (``tests/netns.py``: a
veth pair on 10.213.k.0/24), since the API server refuses loopback addresses in EndpointSlices
("may not be in the loopback range") and test traffic may target nothing but loopback and the
run's own namespaces; nothing listens there (the proxies' probes just fail), and the proxies
listen on the pair's root-namespace end so that their probes can be sent at all.  Making the
namespace needs root (as the bench runs).

The endpoints are addresses inside a network namespace made for the run (``tests/netns.py``:
the API server refuses loopback addresses in EndpointSlices); nothing listens there, and
nothing sent there leaves the machine.  Reuses the test harness (``tests/kubecluster.py``,
``tests/e2e/kubeproc.py``); every process is stopped by PID, the control plane by
``hack/test-cluster down``, the namespace removed.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubeproc import KubeProxy, KubeStack, apply, dispatcherset, endpoint_slice
from kubeproc import service as service_object

import kubecluster
from netns import GatewayNet
from sipphelpers import free_port, percentile

__all__ = ["measure_propagation"]

SERVICE = "gateways"
SET = {
    "setId": 1,
    "algorithm": "round-robin",
    "gateways": [{"service": SERVICE, "port": "sip"}],
    "probing": {"interval": 5, "timeout": 1, "failureThreshold": 3, "successThreshold": 1},
}


def _served_ports(proxy: KubeProxy) -> set[int]:
    url = f"{proxy.control_url}/v1/destinations"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            sets = json.loads(response.read())["sets"]
    except (OSError, ValueError, KeyError):
        return set()
    ports = set()
    for s in sets:
        for d in s["destinations"]:
            tail = d["uri"].split(";", 1)[0].rsplit(":", 1)[-1]
            if tail.isdigit():
                ports.add(int(tail))
    return ports


def _wait_served(proxy: KubeProxy, port: int, start: float, out: dict[str, float]) -> None:
    deadline = start + 15.0
    while time.monotonic() < deadline:
        if port in _served_ports(proxy):
            out[proxy.replica] = time.monotonic() - start
            return
        time.sleep(0.003)


def measure_propagation(
    workdir: Path, *, replicas: int = 3, changes: int = 20, log: Any = print
) -> dict[str, Any]:
    from kubernetes import client  # noqa: PLC0415 - test extra, only for this phase

    workdir.mkdir(parents=True, exist_ok=True)
    if not kubecluster.is_built():
        log("  building the test control plane (hack/test-cluster build, cached afterwards)")
        kubecluster.build()
    with GatewayNet.create(addresses=1) as net:  # removed again however this ends
        cluster = kubecluster.start(owner_pid=os.getpid())
        stack: KubeStack | None = None
        api = None
        try:
            namespace = cluster.create_namespace("bench-propagation")
            stack = KubeStack.start(cluster, namespace, workdir, proxy_ip=net.host)
            host = net.next_address()
            base_port = free_port(net.host)
            apply(
                cluster.kubectl,
                namespace,
                service_object(SERVICE),
                endpoint_slice(f"{SERVICE}-base", SERVICE, [host], base_port),
                dispatcherset(SERVICE, SET),
            )
            proxies = [stack.start_proxy(f"proxy-{i}") for i in range(replicas)]
            for proxy in proxies:
                deadline = time.monotonic() + 30
                while base_port not in _served_ports(proxy):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{proxy.replica} never served the first table")
                    time.sleep(0.05)
            api = cluster.api_client()
            discovery = client.DiscoveryV1Api(api)
            samples: list[dict[str, float]] = []
            for i in range(changes):
                port = free_port()
                # the client serialises a dict body as it does its model (typed as the model)
                body: Any = endpoint_slice(f"{SERVICE}-{i}", SERVICE, [host], port)
                seen: dict[str, float] = {}
                start = time.monotonic()
                threads = [
                    threading.Thread(target=_wait_served, args=(p, port, start, seen), daemon=True)
                    for p in proxies
                ]
                for t in threads:
                    t.start()
                discovery.create_namespaced_endpoint_slice(namespace, body)
                for t in threads:
                    t.join(timeout=20)
                samples.append(dict(seen))
                time.sleep(0.2)
        finally:
            if api is not None:
                api.close()
            if stack is not None:
                stack.close()
            kubecluster.stop(cluster)
    every = [max(s.values()) if len(s) == replicas else float("inf") for s in samples]
    each = [v for s in samples for v in s.values()]
    missed = sum(len(s) < replicas for s in samples)
    result = {
        "replicas": replicas,
        "changes": changes,
        "missed": missed,
        "every_replica_p50_s": percentile(every, 50),
        "every_replica_p99_s": percentile(every, 99),
        "every_replica_max_s": max(every) if every else float("nan"),
        "each_replica_p50_s": percentile(each, 50),
        "each_replica_p99_s": percentile(each, 99),
        "samples": samples,
    }
    log(
        f"  endpoint change -> all {replicas} replicas: p50 {result['every_replica_p50_s']:.3f} s, "
        f"p99 {result['every_replica_p99_s']:.3f} s, max {result['every_replica_max_s']:.3f} s "
        f"over {changes} changes" + (f"; {missed} never reached every replica" if missed else "")
    )
    return result
