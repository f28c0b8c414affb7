"""The chart's monitoring objects (PrometheusRule, PodMonitor, Grafana dashboard), rendered
offline: their shapes, that they select this release's pods and ports, that Prometheus' own
PromQL parser takes every expression, and that every metric they name is one the real proxy
and operator expose. The proxy's side is a live
scrape of a standalone ``sipdispatch-proxy``; the operator's is its metrics registry as it
serves it. tests/chart/test_chart_install.py applies the same objects to the API server
against the Prometheus Operator's own CRDs, and scrapes the release's processes too."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from charthelpers import Manifest, Render, find, of_kind
from prometheus_client.exposition import generate_latest
from promnames import SYNTHETIC, chart_exprs, exposed, selected, used

from sipdispatch.operator.metrics import OperatorMetrics
from sipphelpers import control_page, free_port, proxy_command

ALL_ON = [
    *("--set", "monitoring.prometheusRule.enabled=true"),
    *("--set", "monitoring.podMonitor.enabled=true"),
    *("--set", "monitoring.dashboard.enabled=true"),
]
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def rules(docs: list[Manifest]) -> list[dict[str, Any]]:
    rule = find(docs, "PrometheusRule")
    return [each for group in rule["spec"]["groups"] for each in group["rules"]]


def dashboard(docs: list[Manifest]) -> dict[str, Any]:
    config = find(docs, "ConfigMap", "sipdispatch-dashboard")
    parsed: dict[str, Any] = json.loads(config["data"]["sipdispatch.json"])
    return parsed


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


@pytest.fixture(scope="module")
def proxy_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a running standalone proxy (a file table, probes off)."""
    tmp = tmp_path_factory.mktemp("proxy")
    table = tmp / "dispatcher.list"
    table.write_text("1 sip:127.0.0.1:9\n")
    port, control = free_port(), free_port()
    command = proxy_command()
    log = tmp / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *command,
                *("--dispatcher-list", str(table)),
                *("--listen", f"udp:127.0.0.1:{port}"),
                *("--control", f"127.0.0.1:{control}", "--probe-mode", "off"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield control_page(f"http://127.0.0.1:{control}/metrics", process, log).decode()
    finally:
        process.terminate()
        process.wait(10)


def operator_page() -> str:
    """What the operator's /metrics serves: its registry with the scrape-time gauges."""
    metrics = OperatorMetrics()
    metrics.live(lambda: True, lambda: 1.0)
    return generate_latest(metrics.registry).decode()


def test_monitoring_objects_are_off_by_default(render: Render) -> None:
    docs = render()
    assert not of_kind(docs, "PrometheusRule")
    assert not of_kind(docs, "PodMonitor")
    labels = [d["metadata"]["labels"] for d in of_kind(docs, "ConfigMap")]
    assert not [each for each in labels if "grafana_dashboard" in each]


def test_every_metric_the_rules_and_dashboard_use_is_exposed(
    render: Render, proxy_page: str
) -> None:
    docs = render(*ALL_ON)
    exprs = chart_exprs(docs)
    assert len(exprs) == len(rules(docs)) + len(dashboard_exprs(dashboard(docs)))
    names = set().union(*selected(*exprs))
    offered = exposed(proxy_page) | exposed(operator_page()) | SYNTHETIC
    assert names - offered == set(), "names no proxy or operator exposes"
    # The check sees what it should: table age, readiness and the operator's watch are used.
    assert {
        "sipdispatch_table_last_applied_timestamp_seconds",
        "sipdispatch_ready",
        "sipdispatch_operator_watch_silence_seconds",
        "sipdispatch_set_destinations_active",
    } <= names
    assert "sipdispatch_table_last_applied_timestamp_seconds" in exposed(proxy_page)
    # And a misspelt name is caught.
    typo = render(
        *("--set", "monitoring.prometheusRule.enabled=true"),
        *("--set", "monitoring.prometheusRule.extraRules[0].alert=Typo"),
        *("--set", "monitoring.prometheusRule.extraRules[0].expr=sipdispatch_redy == 0"),
    )
    assert used(typo) - offered == {"sipdispatch_redy"}
    # And so is PromQL that Prometheus would refuse.
    with pytest.raises(AssertionError, match="parse error"):
        selected("sum by (set (sipdispatch_ready)")


def test_the_prometheus_rule_has_the_shape_prometheus_requires(render: Render) -> None:
    docs = render(*ALL_ON, "--set", "monitoring.prometheusRule.labels.release=prom")
    rule = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    groups = rule["spec"]["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    alerts = [each["alert"] for each in rules(docs)]
    assert len(set(alerts)) == len(alerts)
    assert set(alerts) >= {
        "SipdispatchDestinationDown",
        "SipdispatchSetDown",
        "SipdispatchTableNotApplied",
        "SipdispatchRequestsLimited",
        "SipdispatchRequestsRefused",
        "SipdispatchProxyNotReady",
        "SipdispatchOperatorDown",
        "SipdispatchOperatorNoLeader",
        "SipdispatchOperatorWatchStalled",
        "SipdispatchOperatorReconcileFailing",
    }
    for each in rules(docs):
        assert set(each) <= {"alert", "expr", "for", "labels", "annotations"}, each["alert"]
        assert isinstance(each["expr"], str)
        assert each["expr"].count("(") == each["expr"].count(")"), each["alert"]
        assert DURATION.match(each["for"]), each["alert"]
        assert each["labels"]["severity"] in {"warning", "critical"}
        notes = each["annotations"]
        assert notes["summary"], each["alert"]
        assert len(notes["description"]) > 120, each["alert"]
        # Go templates of Prometheus survive Helm's: {{ $labels.x }} reaches Prometheus as is.
        assert "$labels" not in each["expr"]
    by_name = {each["alert"]: each for each in rules(docs)}
    assert "{{ $labels.uri }}" in by_name["SipdispatchDestinationDown"]["annotations"]["summary"]
    assert "> 70" in by_name["SipdispatchOperatorWatchStalled"]["expr"], "watchTimeout 60 + 10"


def test_the_rules_select_this_releases_pods_only(render: Render) -> None:
    docs = render(*ALL_ON, release="edge", namespace="voice")
    by_name = {each["alert"]: each["expr"] for each in rules(docs)}
    proxy = find(docs, "Deployment", "edge-sipdispatch-proxy")["metadata"]["name"]
    operator = find(docs, "Deployment", "edge-sipdispatch-operator")["metadata"]["name"]

    def pod_pattern(expr: str) -> re.Pattern[str]:
        (pattern,) = set(re.findall(r'pod=~"([^"]+)"', expr))
        assert 'namespace="voice"' in expr
        return re.compile(pattern)

    proxy_pods = pod_pattern(by_name["SipdispatchSetDown"])
    assert proxy_pods.fullmatch(f"{proxy}-5d8f9c7b6-x2k4q")  # a Deployment's pod
    assert proxy_pods.fullmatch(f"{proxy}-x2k4q")  # a DaemonSet's pod
    assert not proxy_pods.fullmatch(f"{operator}-5d8f9c7b6-x2k4q")
    operator_pods = pod_pattern(by_name["SipdispatchOperatorNoLeader"])
    assert operator_pods.fullmatch(f"{operator}-5d8f9c7b6-x2k4q")
    assert not operator_pods.fullmatch(f"{proxy}-5d8f9c7b6-x2k4q")
    # Without an operator the release needs a Secret of the user's own for the route keys.
    docs = render(
        *ALL_ON, "--set", "operator.enabled=false", "--set", "proxy.secret.existingSecret=keys"
    )
    assert not [a for a in (each["alert"] for each in rules(docs)) if "Operator" in a]


def test_extra_rules_and_thresholds_come_from_the_values(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "monitoring:\n"
        "  prometheusRule:\n"
        "    enabled: true\n"
        "    limitedRequestsPerSecond: 42\n"
        "    setDownFor: 30s\n"
        "    extraRules:\n"
        "      - {alert: Mine, expr: sipdispatch_ready == 0, for: 1m}\n"
    )
    docs = render("-f", str(values))
    by_name = {each["alert"]: each for each in rules(docs)}
    assert by_name["SipdispatchRequestsLimited"]["expr"].endswith("> 42")
    assert by_name["SipdispatchSetDown"]["for"] == "30s"
    assert by_name["Mine"]["expr"] == "sipdispatch_ready == 0"


def test_the_pod_monitor_scrapes_the_ports_the_pods_name(render: Render) -> None:
    docs = render(*ALL_ON, "--set", "monitoring.podMonitor.labels.release=prom")
    monitor = find(docs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]
    (expression,) = selector["matchExpressions"]
    ports = {each["port"] for each in monitor["spec"]["podMetricsEndpoints"]}
    scraped = set()
    for deployment in of_kind(docs, "Deployment"):
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items()
        assert labels[expression["key"]] in expression["values"]
        for container in template["spec"]["containers"]:
            named = {port["name"] for port in container["ports"]}
            scraped |= named & ports
            assert "http-health" not in ports
    assert scraped == {"http-control", "http-metrics"}, "the proxy's and the operator's"


def test_the_dashboard_is_a_sidecar_configmap_for_this_release(render: Render) -> None:
    docs = render(*ALL_ON, "--set", "monitoring.dashboard.namespace=monitoring", release="edge")
    config = find(docs, "ConfigMap", "edge-sipdispatch-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["namespace"] == "monitoring"
    board = json.loads(config["data"]["sipdispatch.json"])
    assert board["uid"]
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["proxy"]["query"] == "edge-sipdispatch-proxy"
    assert variables["operator"]["query"] == "edge-sipdispatch-operator"
    exprs = dashboard_exprs(board)
    assert len(exprs) >= 15
    for expr in exprs:
        assert 'namespace="$namespace"' in expr, expr
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
