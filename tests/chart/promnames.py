"""Metric names on both sides of the chart's monitoring: those a PromQL expression selects, and
those a /metrics page exposes.

The expression side is a small tokenizer, not a PromQL parser (no Python one is packaged, and
promtool is a large build): it drops strings, label matchers ``{...}``, ranges ``[...]``,
numbers and the label lists of ``by``/``without``/``on``/``ignoring``/``group_*``, then keeps
the identifiers that are neither keywords nor function calls. That is all PromQL's grammar
allows a metric name to be.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan", "atan2"}
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


def selected(expr: str) -> set[str]:
    """Every metric name ``expr`` selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    grouping = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
    text = re.sub(grouping, " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", text):
        word = match.group(0).rstrip("( \t\n")
        if match.group(1) or word.lower() in KEYWORDS:
            continue  # a function call, or an operator word
        start = match.start()
        if start and (text[start - 1].isdigit() or text[start - 1] == "."):
            continue  # the exponent or unit of a number: 1e3, 5m
        names.add(word)
    return names


def exposed(page: str) -> set[str]:
    """Every series name a /metrics page offers (a counter without samples yet included)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(page):
        names.update(f"{family.name}{suffix}" for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def chart_exprs(docs: list[dict[str, Any]]) -> list[str]:
    """Every PromQL expression of a render: the PrometheusRule's and the dashboard's."""
    exprs: list[str] = []
    for doc in docs:
        if doc["kind"] == "PrometheusRule":
            exprs += [rule["expr"] for group in doc["spec"]["groups"] for rule in group["rules"]]
        elif doc["kind"] == "ConfigMap" and "grafana_dashboard" in doc["metadata"]["labels"]:
            for board in doc["data"].values():
                panels = json.loads(board)["panels"]
                exprs += [t["expr"] for p in panels for t in p.get("targets", []) if "expr" in t]
    return exprs
