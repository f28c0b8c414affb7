"""The DispatcherSet spec model: what it accepts, what it refuses, and the examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sipdispatch.api import models
from sipdispatch.operator.render import parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_names_numbers_and_camel_case_are_accepted() -> None:
    spec = models.DispatcherSetSpec.model_validate(
        {
            "setId": 3,
            "algorithm": 7,
            "hashKey": "X-Queue",
            "gateways": [{"service": "asterisk", "port": "sip", "weight": 2}],
            "drainGraceSeconds": 5,
        }
    )
    assert spec.algorithm == "hash-key"
    assert spec.proxy == models.DEFAULT_PROXY
    assert spec.gateways[0].port == "sip"
    assert spec.drain_grace_seconds == 5


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"setId": 1, "algorithm": "roundrobin"}, "algorithm"),
        ({"setId": -1}, "setId"),
        ({"setId": 1, "gateways": [{"service": "Bad_Name"}]}, "service"),
        ({"setId": 1, "gateways": [{"service": "gw", "port": 70000}]}, "port"),
        ({"setId": 1, "gateways": [{"service": "gw", "transport": "sctp"}]}, "transport"),
        ({"setId": 1, "destinations": [{"uri": "http://x"}]}, "uri"),
        ({"setId": 1, "surprise": True}, "surprise"),
        ({"setId": 1, "drainGraceSeconds": -1}, "drainGraceSeconds"),
    ],
)
def test_nonsense_is_refused_naming_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        models.DispatcherSetSpec.model_validate(spec)
    assert field in str(refused.value)


@pytest.mark.parametrize(
    ("spec", "where", "why"),
    [
        (
            {"setId": 1, "destinations": [{"uri": "sip:a:5060"}, {"uri": "SIP:A"}]},
            "spec.destinations[1].uri",
            "same destination as destinations[0]",
        ),
        ({"setId": 1, "hashKey": "X-Queue"}, "spec.hashKey", "only used by algorithm hash-key"),
        ({"setId": 1, "algorithm": "hash-key"}, "spec.hashKey", "required by algorithm"),
        (
            {"setId": 1, "probing": {"interval": 1, "timeout": 3}},
            "spec.probing.timeout",
            "longer than the interval",
        ),
        (
            {"setId": 1, "destinations": [{"uri": "sip:999.1.1.1"}]},
            "spec.destinations[0].uri",
            "not an IPv4 address",
        ),
    ],
)
def test_what_only_the_proxy_model_checks_names_the_field(
    spec: dict[str, object], where: str, why: str
) -> None:
    parsed, issues = parse_spec(spec)
    assert parsed is None
    assert [i.field for i in issues] == [where]
    assert why in issues[0].reason


def _dispatchersets() -> list[tuple[str, dict[str, object]]]:
    return [
        (f"{path.name}:{doc['metadata']['name']}", doc["spec"])
        for path in sorted(EXAMPLES.glob("dispatcherset-*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "DispatcherSet"
    ]


@pytest.mark.parametrize(("name", "spec"), _dispatchersets(), ids=lambda v: str(v)[:40])
def test_examples_are_valid(name: str, spec: dict[str, object]) -> None:
    parsed, issues = parse_spec(spec)
    assert parsed is not None, f"{name}: {issues}"


def test_there_are_examples_with_static_destinations_and_gateways() -> None:
    specs = [spec for _, spec in _dispatchersets()]
    assert any(s.get("destinations") for s in specs)
    assert any(s.get("gateways") for s in specs)
