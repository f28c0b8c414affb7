"""crds/ is generated from the models: a drift fails here, and every field is documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sipdispatch.api import crd
from sipdispatch.dispatch import algorithms, uris

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_directory_matches_the_models() -> None:
    expected = crd.render_all()
    found = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert sorted(found) == sorted(expected), "run: python -m sipdispatch.api.crd crds/"
    for name, text in expected.items():
        assert found[name] == text, f"crds/{name} drifted: python -m sipdispatch.api.crd crds/"


def _properties(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _properties(child, f"{path}.{name}")
    items = node.get("items")
    if isinstance(items, dict):
        yield from _properties(items, f"{path}[]")


@pytest.mark.parametrize("make", [crd.dispatcherset_crd, crd.dispatcherreport_crd])
def test_every_field_has_a_description_and_the_schema_is_structural(make: Any) -> None:
    version = make()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    fields = list(_properties(schema))
    assert len(fields) > 10
    for path, node in fields:
        assert node.get("description"), f"{path} has no description"
        assert not {"$ref", "anyOf", "title"} & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"


def test_dispatcherset_is_namespaced_with_status_short_name_and_columns() -> None:
    spec = crd.dispatcherset_crd()["spec"]
    assert (spec["group"], spec["scope"]) == ("sipdispatch.io", "Namespaced")
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    assert spec["names"]["shortNames"] == ["dset"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == [
        "Set",
        "Algorithm",
        "Up/Total",
        "Ready",
        "Reason",
        "Takes",
        "Age",
        "Proxy",
        "Message",
    ]


def _rule(path: list[str]) -> str:
    node = crd.dispatcherset_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    rules: list[dict[str, str]] = node["x-kubernetes-validations"]
    return rules[0]["rule"]


def test_the_algorithm_rule_knows_every_algorithm() -> None:
    rule = _rule(["spec", "algorithm"])
    for name in algorithms.ALGORITHMS:
        assert f"'{name}'" in rule
    assert f"self <= {len(algorithms.ALGORITHMS) - 1}" in rule


@pytest.mark.parametrize(
    "uri",
    [
        "sip:10.0.0.5",
        "sip:10.0.0.5:5060",
        "sip:alice@gw.example.com;transport=tcp",
        "sips:[2001:db8::1]:5061",
        "sip:gw-1.voice.svc.cluster.local:5080;lr",
        "foo:bar",
        "sip:",
        "http://x",
        "sip:a b",
        "sip:gw_1",
        "sip:10.0.0.5:",
        "SIP:10.0.0.5:5060",
        "Sips:gw.example.com",
    ],
)
def test_the_uri_rule_agrees_with_the_proxy_parser(uri: str) -> None:
    # RE2 (CEL) and Python's re read this pattern alike. Host checks that need arithmetic
    # (an octet over 255) are left to the operator, which reports them as Stalled.
    match = re.fullmatch(r"self\.matches\(r'(.*)'\)", _rule(["spec", "destinations", "[]", "uri"]))
    assert match is not None
    accepted_by_schema = re.search(match.group(1), uri) is not None
    try:
        uris.parse_sip_uri(uri)
        accepted_by_proxy = True
    except ValueError:
        accepted_by_proxy = False
    assert accepted_by_schema == accepted_by_proxy


def test_generated_text_is_what_the_yaml_loads() -> None:
    for text in crd.render_all().values():
        doc = yaml.safe_load(text)
        assert doc["kind"] == "CustomResourceDefinition"
