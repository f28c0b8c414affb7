"""Metric names on both sides of the chart's monitoring: those a PromQL expression selects, and
those a /metrics page exposes.

Expressions are parsed by Prometheus' own PromQL parser (tools/promql, a few lines over the
``promql/parser`` package of Prometheus' Go module), built once with ``go build`` and cached
outside git in ``~/.cache/sipdispatch/promql/<hash of its sources>/`` like hack/test-cluster's
binaries (about 20 s cold). An expression that does not parse fails the test with the parser's
message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from charthelpers import REPO
from prometheus_client.parser import text_string_to_metric_families

TOOL = REPO / "tools" / "promql"
#: series Prometheus makes itself for every target, not exported by anything
SYNTHETIC = {"up"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}
#: Grafana's variables, replaced by values of the same kind before parsing
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")
GRAFANA_VARIABLES = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def _parser() -> Path:
    """The promql-names binary, built if the cache lacks it (fails loudly)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((TOOL / name).read_bytes())
    root = Path(os.environ.get("SIPDISPATCH_CACHE", Path.home() / ".cache" / "sipdispatch"))
    binary = root / "promql" / digest.hexdigest()[:16] / "promql-names"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=binary.parent, delete=False) as partial:
        pass
    built = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", partial.name, "."],
        cwd=TOOL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if built.returncode != 0:
        Path(partial.name).unlink(missing_ok=True)
        raise RuntimeError(f"go build tools/promql:\n{built.stdout}{built.stderr}")
    os.replace(partial.name, binary)  # whole or not at all, when two runs race
    return binary


def selected(*exprs: str) -> list[set[str]]:
    """The metric names each expression selects, as Prometheus parses it."""
    lines = "".join(json.dumps(expr) + "\n" for expr in exprs)
    run = subprocess.run(
        [str(_parser())], input=lines, capture_output=True, text=True, timeout=60, check=False
    )
    results = [json.loads(line) for line in run.stdout.splitlines()]
    errors = [f"{r['expr']}\n  {r['error']}" for r in results if "error" in r]
    assert not errors, "PromQL that Prometheus refuses:\n" + "\n".join(errors)
    assert run.returncode == 0, run.stderr
    assert len(results) == len(exprs)
    return [set(result.get("names", [])) for result in results]


def from_grafana(expr: str) -> str:
    """A dashboard query as Prometheus receives it: Grafana's variables filled in."""
    return GRAFANA_VARIABLES.sub("x", GRAFANA_RANGES.sub("5m", expr))


def exposed(page: str) -> set[str]:
    """Every series name a /metrics page offers (a counter without samples yet included)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(page):
        names.update(f"{family.name}{suffix}" for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def chart_exprs(docs: list[dict[str, Any]]) -> list[str]:
    """Every PromQL expression of a render: the PrometheusRule's and the dashboard's (with
    Grafana's variables filled in)."""
    exprs: list[str] = []
    for doc in docs:
        if doc["kind"] == "PrometheusRule":
            exprs += [rule["expr"] for group in doc["spec"]["groups"] for rule in group["rules"]]
        elif doc["kind"] == "ConfigMap" and "grafana_dashboard" in doc["metadata"]["labels"]:
            for board in doc["data"].values():
                panels = json.loads(board)["panels"]
                exprs += [
                    from_grafana(t["expr"])
                    for p in panels
                    for t in p.get("targets", [])
                    if "expr" in t
                ]
    return exprs


def used(docs: list[dict[str, Any]]) -> set[str]:
    """Every metric name the render's rules and dashboard select."""
    return set().union(*selected(*chart_exprs(docs)))
