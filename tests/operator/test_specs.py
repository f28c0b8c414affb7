"""A DispatcherSet spec validated once into what rendering needs: issues name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sipdispatch.operator.specs import parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
        (
            {"setId": 1, "tls": {"serverName": "gw example"}},
            "spec.tls.serverName",
            "not a host name",
        ),
    ],
)
def test_what_only_the_proxy_model_checks_names_the_field(
    spec: dict[str, object], where: str, why: str
) -> None:
    parsed, issues = parse_spec(spec)
    assert parsed is None
    assert [i.location for i in issues] == [where]
    assert why in issues[0].message


def _dispatchersets() -> list[tuple[str, dict[str, object]]]:
    return [
        (f"{path.name}:{doc['metadata']['name']}", doc["spec"])
        for path in [
            *sorted(EXAMPLES.glob("dispatcherset-*.yaml")),
            EXAMPLES / "asterisk-cluster" / "dispatchersets.yaml",
        ]
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


def test_a_valid_spec_is_the_static_part_of_the_proxy_set() -> None:
    parsed, issues = parse_spec(
        {"setId": 4, "destinations": [{"uri": "sip:GW.example.com", "weight": 2}]}
    )
    assert issues == ()
    assert parsed is not None
    assert (parsed.static.id, parsed.static.algorithm) == (4, "round-robin")
    assert parsed.static.destinations == parsed.spec.destinations
    assert parsed.static_keys == {"sip:gw.example.com:5060;transport=udp"}


def test_a_sets_tls_verification_goes_into_the_proxys_table() -> None:
    parsed, issues = parse_spec(
        {"setId": 3, "tls": {"verify": False, "caFile": "/etc/ca/ca.crt", "serverName": "gw.x"}}
    )
    assert not issues
    assert parsed is not None
    tls = parsed.static.to_set_config("round-robin").tls
    assert tls is not None
    assert (tls.verify, tls.ca_file, tls.server_name) == (False, "/etc/ca/ca.crt", "gw.x")
