"""Where the proxy replicas run and who may reach them, rendered offline: the default spread
over nodes, the PodDisruptionBudget, the HPA, the NetworkPolicies, the DaemonSet and host
network mode for SIP edges, and the values the chart refuses to render."""

from __future__ import annotations

from typing import Any

from charthelpers import CHART, Helm, Manifest, Render, container, expand, find, of_kind, option

from sipdispatch.proxy.cli import build_parser as proxy_parser


def _pod(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _refused(helm_cli: Helm, *values: str) -> str:
    result = helm_cli("template", "x", str(CHART), *values, check=False)
    assert result.returncode != 0, "rendered"
    return result.stderr


def test_replicas_spread_over_nodes_where_they_can_by_default(render: Render) -> None:
    docs = render()
    proxy = find(docs, "Deployment", "sipdispatch-proxy")
    (spread,) = _pod(proxy)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway", "a one-node cluster still schedules"
    assert spread["labelSelector"]["matchLabels"] == proxy["spec"]["selector"]["matchLabels"]
    assert "topologySpreadConstraints" not in _pod(find(docs, "Deployment", "sipdispatch-operator"))


def test_the_disruption_budget_needs_more_than_one_replica(render: Render) -> None:
    assert find(render(), "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert not of_kind(render("--set", "proxy.replicas=1"), "PodDisruptionBudget")
    off = render("--set", "proxy.podDisruptionBudget.enabled=false")
    assert not of_kind(off, "PodDisruptionBudget")


def test_a_prestop_sleep_as_long_as_the_grace_period_is_refused(helm_cli: Helm) -> None:
    error = _refused(
        helm_cli,
        *("--set", "proxy.preStopSleepSeconds=45"),
        *("--set", "proxy.terminationGracePeriodSeconds=45"),
    )
    assert "proxy.preStopSleepSeconds (45)" in error
    assert "proxy.terminationGracePeriodSeconds (45)" in error


def test_the_hpa_scales_the_deployment_on_cpu(render: Render, helm_cli: Helm) -> None:
    docs = render(
        *("--set", "proxy.autoscaling.enabled=true", "--set", "proxy.autoscaling.minReplicas=3"),
        *("--set", "proxy.resources.requests.cpu=500m"),
    )
    hpa = find(docs, "HorizontalPodAutoscaler", "sipdispatch-proxy")
    proxy = find(docs, "Deployment", "sipdispatch-proxy")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sipdispatch-proxy",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert "replicas" not in proxy["spec"], "the HPA owns the replica count"
    assert find(docs, "PodDisruptionBudget")
    assert not of_kind(render(), "HorizontalPodAutoscaler")
    error = _refused(helm_cli, "--set", "proxy.autoscaling.enabled=true")
    assert "proxy.resources.requests.cpu" in error
    error = _refused(
        helm_cli,
        *("--set", "proxy.autoscaling.enabled=true", "--set", "proxy.kind=DaemonSet"),
        *("--set", "proxy.resources.requests.cpu=1"),
    )
    assert "proxy.kind Deployment" in error


def test_sip_edges_run_as_a_daemonset_on_the_host_network(render: Render) -> None:
    docs = render("--set", "proxy.kind=DaemonSet", "--set", "proxy.hostNetwork=true")
    assert not of_kind(docs, "PodDisruptionBudget")
    edge = find(docs, "DaemonSet", "sipdispatch-proxy")
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == ["sipdispatch-operator"]
    assert "replicas" not in edge["spec"]
    assert "strategy" not in edge["spec"]
    assert edge["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1}
    pod = _pod(edge)
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet", "cluster names still resolve"
    assert "topologySpreadConstraints" not in pod
    each = container(edge, "proxy")
    env = {var["name"]: f"<{var['name']}>" for var in each["env"]}
    args = expand(each["args"], env)
    assert proxy_parser().parse_args(args).kubernetes_table
    assert option(args, "--listen")[0] == "udp:<POD_IP>:5060", "the node's address"
    assert "hostNetwork" not in _pod(find(render(), "Deployment", "sipdispatch-proxy"))


def test_network_policies_are_off_by_default(render: Render) -> None:
    assert not of_kind(render(), "NetworkPolicy")


def test_the_proxy_takes_sip_from_the_peers_given_and_control_from_inside(
    render: Render,
) -> None:
    docs = render(
        *("--set", "networkPolicy.enabled=true"),
        *("--set", "networkPolicy.sip.from[0].ipBlock.cidr=203.0.113.0/24"),
    )
    proxy = find(docs, "Deployment", "sipdispatch-proxy")
    policy = find(docs, "NetworkPolicy", "sipdispatch-proxy")
    assert policy["spec"]["podSelector"]["matchLabels"] == proxy["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"], "gateways anywhere: egress stays open"
    sip, control = policy["spec"]["ingress"]
    ports = {(p["containerPort"], p["protocol"]) for p in container(proxy, "proxy")["ports"]}
    assert {(p["port"], p["protocol"]) for p in sip["ports"]} == {(5060, "UDP"), (5060, "TCP")}
    assert {(p["port"], p["protocol"]) for p in control["ports"]} == {(8080, "TCP")}
    assert {(p["port"], p["protocol"]) for p in sip["ports"] + control["ports"]} == ports
    assert sip["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert control["from"] == [
        {"podSelector": {}},
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["monitoring"],
                    }
                ]
            }
        },
    ]
    anyone = find(
        render("--set", "networkPolicy.enabled=true"), "NetworkPolicy", "sipdispatch-proxy"
    )
    assert "from" not in anyone["spec"]["ingress"][0], "SIP from anywhere by default"


def test_the_operator_may_reach_only_dns_and_the_api_server(render: Render) -> None:
    docs = render(
        *("--set", "networkPolicy.enabled=true"),
        *("--set", "networkPolicy.apiServer.cidrs={10.96.0.1/32}"),
    )
    operator = find(docs, "Deployment", "sipdispatch-operator")
    policy = find(docs, "NetworkPolicy", "sipdispatch-operator")
    assert (
        policy["spec"]["podSelector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, api = policy["spec"]["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert {(p["port"], p["protocol"]) for p in api["ports"]} == {(443, "TCP"), (6443, "TCP")}
    assert api["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]
    (ingress,) = policy["spec"]["ingress"]
    named = {p["name"]: p["containerPort"] for p in container(operator, "operator")["ports"]}
    assert {p["port"] for p in ingress["ports"]} == {named["http-health"], named["http-metrics"]}
    alone = render(
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "operator.enabled=false",
        "--set",
        "proxy.secret.existingSecret=keys",  # no operator to make the route keys' Secret
    )
    assert [p["metadata"]["name"] for p in of_kind(alone, "NetworkPolicy")] == ["sipdispatch-proxy"]
