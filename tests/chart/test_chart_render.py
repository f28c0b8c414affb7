"""The chart rendered and linted offline (helm template / helm lint, no cluster).

The default render is compared with snapshots/default.yaml; ``SIPDISPATCH_UPDATE_GOLDEN=1``
rewrites the snapshot (the same switch as the operator's golden files). Two renders are the
same, byte for byte: the chart holds no random value and looks nothing up (the operator makes
the proxies' Secret). Every ci/*-values.yaml variant passes ``helm lint
--strict`` and the structural checks: selectors without helm.sh/chart, probes on every workload,
non-root read-only containers, no default resources, the proxy told what the operator renders.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from charthelpers import (
    CHART,
    CI_VALUES,
    REPO,
    SNAPSHOTS,
    Helm,
    Manifest,
    Render,
    container,
    expand,
    find,
    of_kind,
    option,
)

from sipdispatch.dispatch.uris import parse_socket
from sipdispatch.operator import k8s as operator_k8s
from sipdispatch.operator.__main__ import build_parser as operator_parser
from sipdispatch.proxy.cli import build_parser as proxy_parser
from sipdispatch.proxy.reporting import report_name

VARIANTS = [pytest.param([], id="defaults")] + [
    pytest.param(["-f", str(path)], id=path.name) for path in CI_VALUES
]
SECRET_DIR = "/etc/sipdispatch/secret"


WORKLOADS = {"Deployment", "DaemonSet"}


def _workloads(docs: list[Manifest]) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] in WORKLOADS]


def _workload(docs: list[Manifest], name: str) -> Manifest:
    (found,) = [doc for doc in _workloads(docs) if doc["metadata"]["name"] == name]
    return found


def _selectors(docs: list[Manifest]) -> list[dict[str, str]]:
    """Every label selector the chart writes: workloads, Services, PDB, ServiceMonitor, spread."""
    found: list[dict[str, str]] = []
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] == "Service":
            found.append(spec["selector"])
        elif doc["kind"] in WORKLOADS | {"PodDisruptionBudget", "ServiceMonitor", "PodMonitor"}:
            found.append(spec["selector"]["matchLabels"])
        elif doc["kind"] == "NetworkPolicy":
            found.append(spec["podSelector"]["matchLabels"])
        if doc["kind"] in WORKLOADS:
            spread = spec["template"]["spec"].get("topologySpreadConstraints", [])
            found.extend(constraint["labelSelector"]["matchLabels"] for constraint in spread)
    return found


# ----------------------------------------------------------------------------- lint, schema


@pytest.mark.parametrize("values", VARIANTS)
def test_helm_lint_strict_passes(helm_cli: Helm, values: list[str]) -> None:
    result = helm_cli("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("nope=1", "nope"),
        ("proxy.service.typo=1", "typo"),
        ("operator.serviceAccount.nmae=x", "nmae"),
        ("proxy.service.type=Nodeport", "type"),
        ("proxy.replicas=-1", "replicas"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
    ],
)
def test_the_schema_refuses_unknown_keys_and_bad_values_naming_them(
    helm_cli: Helm, setting: str, named: str
) -> None:
    result = helm_cli("template", "x", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr or "values don't meet" in result.stderr, result.stderr
    assert named in result.stderr, result.stderr


def _schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in node.get("properties", {}).items():
        found += _schema_nodes(child, f"{path}.{key}" if path else key)
    return found


def test_every_schema_key_has_a_description_and_objects_are_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    for path, node in _schema_nodes(schema):
        assert node.get("description"), f"{path or '(root)'} has no description"
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: additionalProperties"


def _leaf_paths(values: Any, path: str = "", schema: dict[str, Any] | None = None) -> set[str]:
    """Paths of values.yaml, descending into the objects the schema describes key by key."""
    paths = {path} if path else set()
    if isinstance(values, dict) and (schema is None or "properties" in schema):
        for key, child in values.items():
            sub = (schema or {}).get("properties", {}).get(key, {})
            paths |= _leaf_paths(child, f"{path}.{key}" if path else key, sub)
    return paths


def test_values_yaml_and_the_schema_have_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    in_schema = {path for path, _ in _schema_nodes(schema) if path} - {"global"}
    assert _leaf_paths(values, schema=schema) == in_schema


def _values_keys() -> list[tuple[str, list[str]]]:
    """(dotted path, comment lines right above) of every key of values.yaml."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    keys = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        comments = []
        for above in reversed(lines[:number]):
            if not above.strip().startswith("#"):
                break
            comments.insert(0, above.strip().removeprefix("#"))
        keys.append((".".join(k for _, k in stack), comments))
    return keys


def _schema_node(path: str) -> dict[str, Any]:
    node: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    for part in path.split("."):
        node = node.get("properties", {}).get(part, {})
    return node


def test_every_key_of_values_yaml_is_documented() -> None:
    """Each key has prose right above it; sections are documented by their keys."""
    for path, comments in _values_keys():
        node = _schema_node(path)
        if not node or "properties" in node:
            continue  # a section, or inside a pass-through Kubernetes object (securityContext)
        assert comments, f"values.yaml: {path} has no comment"
        assert comments[0].startswith(" -- "), f"values.yaml: {path}: prose starts with '# --'"


def test_the_examples_in_values_yaml_are_valid_values(render: Render, tmp_path: Path) -> None:
    """Every "For example:" block parses and passes the schema: users can paste them."""
    merged: dict[str, Any] = {}
    count = 0
    for path, comments in _values_keys():
        if " For example:" not in comments:
            continue
        block = []
        for line in comments[comments.index(" For example:") + 1 :]:
            if not line.startswith("   "):
                break
            block.append(line[3:])
        example = yaml.safe_load("\n".join(block))
        *parents, key = path.split(".")
        assert isinstance(example, dict), f"{path}: the example is not a mapping"
        assert list(example) == [key], f"{path}: the example sets {list(example)}"
        target = merged
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = example[key]
        count += 1
    assert count > 60
    values = tmp_path / "examples.yaml"
    values.write_text(yaml.safe_dump(merged))
    docs = render("-f", str(values))
    assert len(of_kind(docs, "ServiceMonitor")) == 2, "the proxy's and the operator's"
    assert not of_kind(docs, "PodDisruptionBudget"), "the example turns it off"
    assert find(docs, "HorizontalPodAutoscaler")
    assert find(docs, "PrometheusRule")


# ----------------------------------------------------------------------------- snapshot


def test_default_render_matches_the_snapshot(helm_cli: Helm) -> None:
    text = helm_cli("template", "sipdispatch", str(CHART), "--namespace", "sipdispatch").stdout
    path = SNAPSHOTS / "default.yaml"
    if os.environ.get("SIPDISPATCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    expected = path.read_text()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True), "snapshot", "render"
        )
    )
    assert text == expected, f"the default render changed (SIPDISPATCH_UPDATE_GOLDEN=1):\n{diff}"


@pytest.mark.parametrize("values", VARIANTS)
def test_two_renders_are_the_same(helm_cli: Helm, values: list[str]) -> None:
    """What Argo CD compares at every sync: a random or looked-up value would differ."""
    args = ("template", "sipdispatch", str(CHART), "--namespace", "voice", *values)
    first, second = helm_cli(*args).stdout, helm_cli(*args).stdout
    assert first == second
    assert "\nkind: Secret\n" not in first, "the operator makes the proxies' Secret"


def test_no_template_makes_up_or_looks_up_a_value() -> None:
    # NOTES.txt may look things up: Helm prints it, nothing applies it. operator-guard.yaml
    # looks up only to refuse an install (it renders no object).
    for path in (CHART / "templates").rglob("*.yaml"):
        text = path.read_text()
        words = ["randAlphaNum", "randAscii", "randBytes", "randNumeric", "uuidv4", "now"]
        if path.name != "operator-guard.yaml":
            words.append("lookup")
        for word in words:
            assert not re.search(rf"\b{word}\b", text), f"{path.name} uses {word}"
    assert "kind: Secret" not in (CHART / "templates" / "operator-guard.yaml").read_text()


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("values", VARIANTS)
def test_selectors_never_carry_the_chart_version(render: Render, values: list[str]) -> None:
    docs = render(*values)
    selectors = _selectors(docs)
    assert len(selectors) >= 4
    for selector in selectors:
        assert "helm.sh/chart" not in selector
        assert "app.kubernetes.io/version" not in selector
    for deployment in _workloads(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    operator = find(docs, "Deployment", "sipdispatch-operator")["spec"]["selector"]
    proxy = _workload(docs, "sipdispatch-proxy")["spec"]["selector"]
    assert operator["matchLabels"] != proxy["matchLabels"], "the two workloads select apart"


def test_no_resources_by_default(render: Render) -> None:
    for deployment in _workloads(render()):
        for each in deployment["spec"]["template"]["spec"]["containers"]:
            assert "resources" not in each, deployment["metadata"]["name"]


@pytest.mark.parametrize("values", VARIANTS)
def test_every_workload_has_probes_and_runs_non_root_read_only(
    render: Render, values: list[str]
) -> None:
    docs = render(*values)
    workloads = _workloads(docs)
    assert {w["metadata"]["name"] for w in workloads} == {
        "sipdispatch-operator",
        "sipdispatch-proxy",
    }
    pods = [w["spec"]["template"]["spec"] for w in workloads]
    pods += [p["spec"] for p in of_kind(docs, "Pod")]  # the helm test pod
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for each in pod["containers"]:
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        for each in spec["containers"]:
            ports = {port["name"] for port in each["ports"]}
            assert "livenessProbe" in each, workload["metadata"]["name"]
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in each:
                    assert each[probe]["httpGet"]["port"] in ports
    proxy = container(_workload(docs, "sipdispatch-proxy"), "proxy")
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert proxy["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_the_operator_elects_a_writer_with_liveness_metrics_and_its_namespaces(
    render: Render,
) -> None:
    docs = render("--set", "operator.watchNamespaces={voice,voice-staging}")
    deployment = find(docs, "Deployment", "sipdispatch-operator")
    assert deployment["spec"]["replicas"] == 1
    assert "strategy" not in deployment["spec"], "rolls: the Lease keeps one writer"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sipdispatch-operator"
    each = container(deployment, "operator")
    assert each["command"] == ["sipdispatch-operator"]
    args = operator_parser().parse_args(each["args"])
    assert args.standalone, "no kopf peering: the Lease elects the writer"
    assert args.lease == "sipdispatch-operator"
    assert args.lease_namespace == "$(POD_NAMESPACE)", "from the downward API, in env"
    assert args.watch_timeout == 60
    assert args.namespace == ["voice", "voice-staging"]
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.metrics == "http://0.0.0.0:8081/metrics"
    assert {e["name"] for e in each["env"]} == {"POD_NAME", "POD_NAMESPACE"}
    assert each["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-health"}
    assert {"containerPort": 8080, "name": "http-health", "protocol": "TCP"} in each["ports"]
    assert {"containerPort": 8081, "name": "http-metrics", "protocol": "TCP"} in each["ports"]
    service = find(docs, "Service", "sipdispatch-operator")
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert service["spec"]["selector"] == _template_labels(deployment, service["spec"]["selector"])
    two = find(render("--set", "operator.replicas=2"), "Deployment", "sipdispatch-operator")
    assert two["spec"]["replicas"] == 2


def _template_labels(deployment: Manifest, wanted: dict[str, str]) -> dict[str, str]:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return {key: labels.get(key, "") for key in wanted}


def test_the_operator_may_write_only_its_tables(render: Render) -> None:
    """A ValidatingAdmissionPolicy on the operator's ServiceAccount (tests/chart
    test_chart_install.py shows the API server enforcing it)."""
    docs = render(namespace="voice")
    policy = find(docs, "ValidatingAdmissionPolicy", "sipdispatch-operator-tables")
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        'request.userInfo.username == "system:serviceaccount:voice:sipdispatch-operator"'
    )
    assert policy["spec"]["failurePolicy"] == "Fail"
    binding = find(docs, "ValidatingAdmissionPolicyBinding", "sipdispatch-operator-tables")
    assert binding["spec"] == {
        "policyName": "sipdispatch-operator-tables",
        "validationActions": ["Deny"],
    }
    off = render("--set", "operator.confineConfigMaps=false")
    assert not of_kind(off, "ValidatingAdmissionPolicy")
    assert not of_kind(render("--set", "rbac.create=false"), "ValidatingAdmissionPolicy")


def test_the_operator_may_touch_only_its_own_lease(render: Render) -> None:
    docs = render(namespace="voice")
    role = find(docs, "Role", "sipdispatch-operator-lease")
    assert role["metadata"]["namespace"] == "voice"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["sipdispatch-operator"],
            "verbs": ["get", "list", "watch", "update"],
        },
    ]
    binding = find(docs, "RoleBinding", "sipdispatch-operator-lease")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sipdispatch-operator", "namespace": "voice"}
    ]


def _proxy_args(docs: list[Manifest]) -> tuple[Manifest, list[str]]:
    (deployment,) = [d for d in _workloads(docs) if d["metadata"]["name"].endswith("-proxy")]
    each = container(deployment, "proxy")
    assert each["command"] == ["sipdispatch-proxy"]
    env = {var["name"]: f"<{var['name']}>" for var in each["env"]}
    return deployment, expand(each["args"], env)


@pytest.mark.parametrize("values", VARIANTS)
def test_the_proxy_command_line_parses_and_names_only_defined_variables(
    render: Render, values: list[str]
) -> None:
    _, args = _proxy_args(render(*values))
    assert not [arg for arg in args if "$(" in arg], "Kubernetes leaves unknown $(VAR) as is"
    parsed = proxy_parser().parse_args(args)
    assert parsed.kubernetes_table


def test_the_proxy_follows_the_table_the_operator_renders(render: Render) -> None:
    docs = render(namespace="voice")
    deployment, args = _proxy_args(docs)
    parsed = proxy_parser().parse_args(args)
    table = operator_k8s.table_name("sipdispatch")
    assert parsed.kubernetes_table == f"voice/{table}"
    role = find(docs, "Role", "sipdispatch-proxy")
    assert role["rules"][0]["resourceNames"] == [table], "RBAC allows reading exactly that table"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sipdispatch-proxy"
    assert parsed.replica == "<POD_NAME>"
    assert report_name("sipdispatch", "pod-1") == "sipdispatch-pod-1"
    env = {
        var["name"]: var["valueFrom"]["fieldRef"]["fieldPath"]
        for var in container(deployment, "proxy")["env"]
    }
    assert env == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_UID": "metadata.uid",
        "POD_IP": "status.podIP",
    }
    # SIP on the pod IP (Via names the replica), Record-Route on the Service users dial.
    assert parsed.listen == ["udp:<POD_IP>:5060", "tcp:<POD_IP>:5060"]
    service = find(docs, "Service", "sipdispatch")
    assert parsed.advertise == "sipdispatch.voice.svc.cluster.local:5060"
    assert parsed.control == "0.0.0.0:8080"
    assert parsed.report
    ports = {
        (p["name"], p["protocol"]): p["containerPort"]
        for p in container(deployment, "proxy")["ports"]
    }
    assert ports == {
        ("sip-udp", "UDP"): 5060,
        ("sip-tcp", "TCP"): 5060,
        ("http-control", "TCP"): 8080,
    }
    assert {(p["targetPort"], p["protocol"]) for p in service["spec"]["ports"]} <= ports.keys()
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()


def pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_ipv6_pod_ips_are_written_in_brackets(render: Render) -> None:
    deployment, _ = _proxy_args(render("--set", "proxy.ipFamily=IPv6"))
    listen = option(container(deployment, "proxy")["args"], "--listen")
    assert listen == ["udp:[$(POD_IP)]:5060", "tcp:[$(POD_IP)]:5060"]
    parsed = proxy_parser().parse_args(expand(container(deployment, "proxy")["args"], {}))
    assert parsed.listen == listen
    assert [str(parse_socket(text.replace("$(POD_IP)", "fd00::5"))) for text in listen] == [
        "udp:[fd00::5]:5060",
        "tcp:[fd00::5]:5060",
    ]


def test_the_advertised_address_follows_the_values(render: Render) -> None:
    _, args = _proxy_args(
        render("--set", "proxy.service.advertise=sip.example.com:5070", namespace="edge")
    )
    assert option(args, "--advertise") == ["sip.example.com:5070"]
    _, args = _proxy_args(render("--set", "clusterDomain=k8s.example", release="lb"))
    assert option(args, "--advertise") == ["lb-sipdispatch.voice.svc.k8s.example:5060"]


@pytest.mark.parametrize("values", VARIANTS)
def test_the_shared_secret_is_mounted_and_named_in_the_args(
    render: Render, values: list[str]
) -> None:
    docs = render(*values)
    deployment, args = _proxy_args(docs)
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secret")
    mount = next(m for m in container(deployment, "proxy")["volumeMounts"] if m["name"] == "secret")
    # mounted whole, no subPath: the kubelet then updates an edited key list in the pods
    assert mount == {"name": "secret", "mountPath": SECRET_DIR, "readOnly": True}
    files = option(args, "--secret-file") + option(args, "--control-token-file")
    assert option(args, "--secret-file"), "every replica signs with the shared secret"
    assert {str(Path(f).parent) for f in files} == {SECRET_DIR}
    # Not optional: without the Secret the kubelet waits (ContainerCreating), never a key of
    # the replica's own that the others would refuse.
    assert "optional" not in volume["secret"]
    operator_args = _operator_args(docs)
    if values:  # ci/gitops-values.yaml: the user's own Secret, which the operator leaves alone
        assert volume["secret"]["secretName"] == "sipdispatch-secret"
    if option(operator_args, "--route-keys-secret"):
        # the operator keeps the very Secret the proxies mount, by the keys they read
        assert option(operator_args, "--route-keys-secret") == [volume["secret"]["secretName"]]
        assert option(operator_args, "--route-keys-key") == [
            Path(option(args, "--secret-file")[0]).name
        ]
        token = option(args, "--control-token-file")
        assert option(operator_args, "--control-token-key") == [Path(t).name for t in token]
        assert option(operator_args, "--dialog-lifetime") == option(args, "--dialog-lifetime")
        parsed = operator_parser().parse_args(operator_args)
        assert parsed.rotate_route_keys_every == 720 * 3600
        assert parsed.route_keys_settle == 300


def _operator_args(docs: list[Manifest]) -> list[str]:
    operator = [d for d in _workloads(docs) if d["metadata"]["name"].endswith("-operator")]
    if not operator:
        return []
    env = {"POD_NAME": "op", "POD_NAMESPACE": "voice"}
    return expand(container(operator[0], "operator")["args"], env)


def test_the_operator_may_touch_only_the_proxies_secret(render: Render) -> None:
    docs = render(release="voip")
    role = find(docs, "Role", "voip-sipdispatch-operator-route-keys")
    assert role["metadata"]["namespace"] == "voice"
    assert role["rules"] == [
        # RBAC cannot name what does not exist yet: the admission policy narrows create
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["voip-sipdispatch-secret"],
            "verbs": ["get", "patch"],
        },
    ]
    assert not [
        rule
        for kind in ("ClusterRole", "Role")
        for doc in of_kind(docs, kind)
        if doc is not role
        for rule in doc.get("rules") or []
        if "secrets" in rule["resources"]
    ], "no other rule names Secrets"
    policy = find(docs, "ValidatingAdmissionPolicy", "voip-sipdispatch-operator-secret")
    [check] = policy["spec"]["validations"]
    assert '"voip-sipdispatch-secret"' in check["expression"]
    assert '"voice"' in check["expression"]
    conditions = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:voice:voip-sipdispatch-operator" in conditions[0]["expression"]


def test_an_existing_secret_replaces_the_generated_one(render: Render) -> None:
    docs = render(
        "--set",
        "proxy.secret.existingSecret=mine",
        "--set",
        "proxy.secret.recordRouteKey=rr",
        "--set",
        "proxy.secret.controlTokenKey=",
    )
    assert not of_kind(docs, "Secret")
    assert not option(_operator_args(docs), "--route-keys-secret"), "the operator leaves it alone"
    assert not [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-route-keys")]
    assert not [
        p for p in of_kind(docs, "ValidatingAdmissionPolicy") if "secret" in p["metadata"]["name"]
    ]
    deployment, args = _proxy_args(docs)
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "secret"
    )
    assert volume["secret"]["secretName"] == "mine"
    assert option(args, "--secret-file") == [f"{SECRET_DIR}/rr"]
    assert option(args, "--control-token-file") == []


def test_requests_may_name_the_service_and_the_hosts_the_values_add(render: Render) -> None:
    _, args = _proxy_args(render())
    service = "sipdispatch"
    names = [
        service,
        f"{service}.voice",
        f"{service}.voice.svc",
        f"{service}.voice.svc.cluster.local",
    ]
    assert option(args, "--allow-domain") == names
    _, args = _proxy_args(render("--set", "proxy.allowDomains={203.0.113.10,sip.example.com}"))
    assert option(args, "--allow-domain") == [*names, "203.0.113.10", "sip.example.com"]


def test_calls_drain_before_a_replica_stops(render: Render) -> None:
    deployment, _ = _proxy_args(render())
    pod = deployment["spec"]["template"]["spec"]
    sleep = container(deployment, "proxy")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < pod["terminationGracePeriodSeconds"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_topology_spread_gets_the_proxy_selector(render: Render) -> None:
    docs = render(
        "--set",
        "proxy.topologySpreadConstraints[0].maxSkew=1",
        "--set",
        "proxy.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "--set",
        "proxy.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    )
    deployment, _ = _proxy_args(docs)
    (constraint,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (
        constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    assert constraint["topologyKey"] == "topology.kubernetes.io/zone"


def test_service_types_ports_and_policies(render: Render) -> None:
    docs = render(
        "--set",
        "proxy.service.type=NodePort",
        "--set",
        "proxy.service.nodePort=30060",
        "--set",
        "proxy.service.externalTrafficPolicy=Local",
        "--set",
        "proxy.service.annotations.example\\.com/x=y",
    )
    service = find(docs, "Service", "sipdispatch")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["metadata"]["annotations"] == {"example.com/x": "y"}
    assert [(p["protocol"], p["port"], p["nodePort"]) for p in service["spec"]["ports"]] == [
        ("UDP", 5060, 30060),
        ("TCP", 5060, 30060),
    ]
    service = find(render("--set", "proxy.service.protocols={UDP}"), "Service", "sipdispatch")
    assert [p["protocol"] for p in service["spec"]["ports"]] == ["UDP"]
    clusterip = find(
        render("--set", "proxy.service.externalTrafficPolicy=Local"), "Service", "sipdispatch"
    )
    assert "externalTrafficPolicy" not in clusterip["spec"], "only valid off ClusterIP"


def test_metrics_service_service_monitor_and_disruption_budget(render: Render) -> None:
    docs = render()
    assert not of_kind(docs, "ServiceMonitor")
    assert find(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1, "two replicas"
    metrics = find(docs, "Service", "sipdispatch-metrics")
    assert metrics["spec"]["publishNotReadyAddresses"] is True
    assert metrics["spec"]["ports"][0]["targetPort"] == "http-control"
    docs = render("--set", "proxy.metrics.serviceMonitor.enabled=true")
    monitor = find(docs, "ServiceMonitor", "sipdispatch-proxy")
    labels = find(docs, "Service", "sipdispatch-metrics")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= find(docs, "Service", "sipdispatch")["metadata"]["labels"].items()
    ), "the SIP Service is not scraped"
    assert monitor["spec"]["endpoints"][0]["port"] == metrics["spec"]["ports"][0]["name"]
    # The operator's replicas are scraped too (the alerts on its leadership and watch).
    operator = find(docs, "ServiceMonitor", "sipdispatch-operator")
    service = find(docs, "Service", "sipdispatch-operator")
    assert (
        operator["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert operator["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    result = render("--set", "proxy.podDisruptionBudget.maxUnavailable=25%")
    assert find(result, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": "25%",
        "selector": {
            "matchLabels": find(docs, "Deployment", "sipdispatch-proxy")["spec"]["selector"][
                "matchLabels"
            ]
        },
    }


def test_a_service_monitor_without_the_metrics_service_is_refused(helm_cli: Helm) -> None:
    result = helm_cli(
        "template",
        "x",
        str(CHART),
        "--set",
        "proxy.metrics.serviceMonitor.enabled=true",
        "--set",
        "proxy.metrics.service.enabled=false",
        check=False,
    )
    assert result.returncode != 0
    assert "needs proxy.metrics.service.enabled" in result.stderr


def test_image_tag_defaults_to_the_app_version(render: Render) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    images = {
        c["image"]
        for d in _workloads(render())
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"ghcr.io/sipdispatch/sipdispatch:{chart['appVersion']}"}
    docs = render("--set", "image.digest=sha256:" + "a" * 64, "--set", "image.pullSecrets={reg}")
    for deployment in _workloads(docs):
        spec = deployment["spec"]["template"]["spec"]
        assert (
            spec["containers"][0]["image"] == "ghcr.io/sipdispatch/sipdispatch@sha256:" + "a" * 64
        )
        assert spec["imagePullSecrets"] == [{"name": "reg"}]


def test_the_test_pod_asks_healthz_through_the_metrics_service(render: Render) -> None:
    docs = render(namespace="voice")
    pod = find(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[-1] == "http://sipdispatch-metrics.voice.svc:8080/healthz"
    assert not of_kind(render("--set", "tests.enabled=false"), "Pod")


def test_without_an_operator_the_secret_must_be_the_users(helm_cli: Helm) -> None:
    run = helm_cli(
        "template", "sipdispatch", str(CHART), "--set", "operator.enabled=false", check=False
    )
    assert run.returncode != 0
    assert "proxy.secret.existingSecret: required when operator.enabled is false" in run.stderr


def test_the_operator_can_be_left_to_another_release(render: Render) -> None:
    docs = render("--set", "operator.enabled=false", "--set", "proxy.secret.existingSecret=mine")
    kinds = sorted(d["kind"] for d in docs)
    assert "ClusterRole" not in kinds
    assert [d["metadata"]["name"] for d in of_kind(docs, "ServiceAccount")] == ["sipdispatch-proxy"]
    assert [d["metadata"]["name"] for d in _workloads(docs)] == ["sipdispatch-proxy"]


def test_the_rbac_the_e2e_tests_rely_on_is_unchanged(render: Render) -> None:
    """tests/e2e render this chart with operator.watchNamespaces and use these identities."""
    docs = render("--set", "operator.watchNamespaces={voice}")
    rbac = sorted(
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
        for d in docs
        if d["kind"]
        in {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    )
    assert rbac == [
        ("ClusterRole", "sipdispatch-edit", None),  # aggregated into edit and admin
        ("ClusterRole", "sipdispatch-view", None),  # aggregated into view, edit and admin
        ("Role", "sipdispatch-operator", "voice"),
        ("Role", "sipdispatch-operator-lease", "voice"),
        ("Role", "sipdispatch-operator-route-keys", "voice"),
        ("Role", "sipdispatch-proxy", "voice"),
        ("RoleBinding", "sipdispatch-operator", "voice"),
        ("RoleBinding", "sipdispatch-operator-lease", "voice"),
        ("RoleBinding", "sipdispatch-operator-route-keys", "voice"),
        ("RoleBinding", "sipdispatch-proxy", "voice"),
        ("ServiceAccount", "sipdispatch-operator", "voice"),
        ("ServiceAccount", "sipdispatch-proxy", "voice"),
    ]


# ----------------------------------------------------------------------------- CRDs


def test_the_chart_ships_the_same_crds_as_crds_dir(render: Render) -> None:
    shipped = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    for name in shipped:
        assert (CHART / "files" / "crds" / name).read_text() == (
            REPO / "crds" / name
        ).read_text(), (
            f"helm/sipdispatch/files/crds/{name} differs from crds/{name}: "
            "cp crds/*.yaml helm/sipdispatch/files/crds/"
        )
    assert not of_kind(render(), "CustomResourceDefinition"), "off by default"
    rendered = of_kind(render("--set", "crds.enabled=true"), "CustomResourceDefinition")
    assert len(rendered) == len(shipped)
    for crd in rendered:
        source = next(
            doc
            for path in (REPO / "crds").glob("*.yaml")
            for doc in [yaml.safe_load(path.read_text())]
            if doc["metadata"]["name"] == crd["metadata"]["name"]
        )
        meta = crd.pop("metadata")
        source_meta = source.pop("metadata")
        assert crd == source, f"{meta['name']}: the rendered CRD differs from crds/"
        assert source_meta["labels"].items() <= meta["labels"].items()
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
    dropped = of_kind(
        render("--set", "crds.enabled=true", "--set", "crds.keep=false"), "CustomResourceDefinition"
    )
    assert all("annotations" not in crd["metadata"] for crd in dropped)


# ----------------------------------------------------------------------------- kind, GitOps


def test_kind_config_maps_sip_to_the_kind_values_node_port() -> None:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    values = yaml.safe_load((CHART / "ci" / "kind-values.yaml").read_text())
    assert config["kind"] == "Cluster"
    mappings = {
        (m["containerPort"], m["hostPort"], m["protocol"])
        for node in config["nodes"]
        for m in node.get("extraPortMappings", [])
    }
    port = values["proxy"]["service"]["nodePort"]
    assert {(port, 5060, "UDP"), (port, 5060, "TCP")} <= mappings
    assert values["proxy"]["service"]["type"] == "NodePort"


def _gitops_values() -> dict[str, dict[str, Any]]:
    gitops = REPO / "examples" / "gitops"
    argo = [d for d in yaml.safe_load_all((gitops / "argocd-application.yaml").read_text()) if d]
    flux = [d for d in yaml.safe_load_all((gitops / "flux-helmrelease.yaml").read_text()) if d]
    application = find(argo, "Application")
    release = find(flux, "HelmRelease")
    source = find(flux, "GitRepository")
    assert application["spec"]["source"]["path"] == "helm/sipdispatch"
    assert release["spec"]["chart"]["spec"]["chart"] == "./helm/sipdispatch"
    assert release["spec"]["chart"]["spec"]["sourceRef"] == {
        "kind": "GitRepository",
        "name": source["metadata"]["name"],
        "namespace": source["metadata"]["namespace"],
    }
    return {
        "argocd": application["spec"]["source"]["helm"]["valuesObject"],
        "flux": release["spec"]["values"],
    }


@pytest.mark.parametrize("tool", ["argocd", "flux"])
def test_the_gitops_examples_render(render: Render, tmp_path: Path, tool: str) -> None:
    values = _gitops_values()[tool]
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render("-f", str(path), namespace="sipdispatch")  # the schema checks every key
    assert len(of_kind(docs, "CustomResourceDefinition")) == 2
    if tool == "argocd":
        # The user's own Secret (the operator's would do as well: the chart renders none).
        assert not of_kind(docs, "Secret")
        assert not of_kind(docs, "Pod")


def test_people_with_edit_may_change_dispatchersets_and_the_proxy_may_not(render: Render) -> None:
    """What ``sipdispatch-ctl --dispatcherset NAME set-state`` needs comes with the edit role."""
    docs = render()
    roles = {d["metadata"]["name"]: d for d in of_kind(docs, "ClusterRole")}
    edit, view = roles["sipdispatch-edit"], roles["sipdispatch-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert edit["rules"] == [
        {
            "apiGroups": ["sipdispatch.io"],
            "resources": ["dispatchersets"],
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        }
    ]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert {v for rule in view["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    proxy = next(d for d in of_kind(docs, "Role") if d["metadata"]["name"] == "sipdispatch-proxy")
    assert not [r for r in proxy["rules"] if "dispatchersets" in r["resources"]]
    off = render("--set", "rbac.aggregateClusterRoles=false")
    assert {d["metadata"]["name"] for d in of_kind(off, "ClusterRole")} == set(roles) - {
        "sipdispatch-edit",
        "sipdispatch-view",
    }


def test_proxy_workers_are_passed_on_only_when_more_than_one(render: Render) -> None:
    deployment, args = _proxy_args(render())
    assert option(args, "--workers") == [], "one process per pod by default"
    deployment, args = _proxy_args(render("--set", "proxy.workers=4"))
    assert option(args, "--workers") == ["4"]
    parsed = proxy_parser().parse_args(expand(container(deployment, "proxy")["args"], {}))
    assert parsed.workers == 4
