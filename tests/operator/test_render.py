"""Rendering DispatcherSets and EndpointSlices into the proxy's table (pure)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from opfixtures import dset, endpoint, endpoint_slice

from sipdispatch.dispatch import configfile
from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.operator.memory import Memory
from sipdispatch.operator.render import Grants, render

GOLDEN = Path(__file__).resolve().parent / "golden"
NOW = 1_900_000_000.0

GATEWAYS = {
    "setId": 2,
    "algorithm": "hash-key",
    "hashKey": "X-Queue",
    "gateways": [{"service": "asterisk", "port": "sip", "priority": 5}],
    "drainGraceSeconds": 30,
}
STATIC = {
    "setId": 1,
    "algorithm": 9,
    "destinations": [
        {"uri": "sip:203.0.113.10:5060", "weight": 3},
        {"uri": "sip:203.0.113.12:5060", "disabled": True},
    ],
    "probing": {"interval": 2, "timeout": 0.5, "failureThreshold": 2},
    "failover": {"codes": ["5xx", 408], "maxAttempts": 2},
}
SLICES = {
    "asterisk": [
        endpoint_slice(
            "asterisk-abc",
            [
                endpoint("10.1.0.7", pod="asterisk-1"),
                endpoint("10.1.0.5", pod="asterisk-0"),
                endpoint("10.1.0.9", ready=False, serving=True, terminating=True, pod="asterisk-2"),
                endpoint("10.1.0.11", ready=False, pod="asterisk-3"),
                endpoint("10.1.0.13", ready=False, serving=False, terminating=True, pod="ast-4"),
                endpoint("10.1.0.15", ready=None, pod="asterisk-5"),
            ],
        )
    ]
}


def check_golden(name: str, text: str) -> None:
    """Compare with golden/NAME; SIPDISPATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("SIPDISPATCH_UPDATE_GOLDEN"):
        path.write_text(text)
    expected = path.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True)))
    assert text == expected, f"{name} differs (SIPDISPATCH_UPDATE_GOLDEN=1 to accept):\n{diff}"


def test_golden_table() -> None:
    rendering = render([dset("trunks", STATIC), dset("asterisk", GATEWAYS)], SLICES, Memory(), NOW)
    check_golden("table.yaml", rendering.text)
    assert rendering.probing_from == "trunks"
    assert rendering.next_change is None


def test_the_table_is_what_the_proxy_loads_with_the_states_it_promises() -> None:
    rendering = render([dset("trunks", STATIC), dset("asterisk", GATEWAYS)], SLICES, Memory(), NOW)
    config = configfile.parse_config(rendering.text, "table.yaml")
    assert config.probing.interval == 2
    table = DestinationTable.build(config.to_table_config(), None, 0.0)
    codes = {t.destination.uri: t.runtime.health.code for t in table.targets()}
    assert codes == {
        "sip:203.0.113.10:5060": "AP",
        "sip:203.0.113.12:5060": "DX",
        "sip:10.1.0.5:5080": "AP",
        "sip:10.1.0.7:5080": "AP",
        "sip:10.1.0.9:5080": "DR",  # terminating, still serving
        "sip:10.1.0.15:5080": "AP",  # ready unknown counts as ready
    }
    asterisk = rendering.sets["asterisk"]
    assert sorted(e.uri for e in asterisk.not_ready) == ["sip:10.1.0.11:5080", "sip:10.1.0.13:5080"]
    assert {d.uri: d.origin for d in asterisk.destinations}["sip:10.1.0.7:5080"] == "pod/asterisk-1"
    assert all(d.priority == 5 for d in asterisk.destinations)


def test_a_gone_endpoint_drains_for_the_grace_then_leaves() -> None:
    spec = {**GATEWAYS, "drainGraceSeconds": 10}
    first = render([dset("asterisk", spec)], SLICES, Memory(), NOW)
    memory = Memory.from_json(first.memory.to_json())  # what a restarted operator reads back
    fewer = {"asterisk": [endpoint_slice("asterisk-abc", [endpoint("10.1.0.5", pod="a-0")])]}

    gone = render([dset("asterisk", spec)], fewer, memory, NOW + 1)
    by_uri = {d.uri: d for d in gone.sets["asterisk"].destinations}
    assert by_uri["sip:10.1.0.7:5080"].draining
    assert by_uri["sip:10.1.0.7:5080"].gone_since == NOW + 1
    assert by_uri["sip:10.1.0.7:5080"].origin == "pod/asterisk-1"  # remembered, not re-read
    assert gone.next_change == NOW + 11
    assert "draining: true" in gone.text

    # The grace runs from when the endpoint went, not from the latest rendering.
    later = render([dset("asterisk", spec)], fewer, gone.memory, NOW + 6)
    assert "sip:10.1.0.7:5080" in {d.uri for d in later.sets["asterisk"].destinations}
    done = render([dset("asterisk", spec)], fewer, later.memory, NOW + 11)
    assert [d.uri for d in done.sets["asterisk"].destinations] == ["sip:10.1.0.5:5080"]
    assert done.next_change is None


def test_an_endpoint_that_comes_back_is_active_again() -> None:
    spec = {**GATEWAYS, "drainGraceSeconds": 10}
    first = render([dset("asterisk", spec)], SLICES, Memory(), NOW)
    gone = render([dset("asterisk", spec)], {}, first.memory, NOW + 1)
    assert all(d.draining for d in gone.sets["asterisk"].destinations)
    assert gone.sets["asterisk"].warnings == (
        "gateways[0]: Service asterisk has no EndpointSlices",
    )
    back = render([dset("asterisk", spec)], SLICES, gone.memory, NOW + 2)
    assert back.text == first.text


def test_an_invalid_spec_keeps_its_last_good_table_and_names_the_field() -> None:
    good = render([dset("trunks", STATIC, generation=1)], {}, Memory(), NOW)
    broken = {**STATIC, "destinations": [{"uri": "sip:203.0.113.10"}, {"uri": "sip:203.0.113.10"}]}
    bad = render([dset("trunks", broken, generation=2)], {}, good.memory, NOW + 1)
    assert bad.text == good.text
    trunks = bad.sets["trunks"]
    assert [str(i) for i in trunks.issues] == [
        "spec.destinations[1].uri: same destination as destinations[0]"
    ]
    assert trunks.served_generation == 1
    fixed = {**STATIC, "destinations": [{"uri": "sip:203.0.113.20"}]}
    again = render([dset("trunks", fixed, generation=3)], {}, bad.memory, NOW + 2)
    assert "203.0.113.20" in again.text
    assert again.sets["trunks"].issues == ()


def test_a_new_invalid_set_stays_out_and_a_recreated_one_does_not_inherit() -> None:
    good = render([dset("trunks", STATIC)], {}, Memory(), NOW)
    recreated = dset("trunks", {**STATIC, "hashKey": "X-Queue"}, uid="another-uid")
    bad = render([recreated], {}, good.memory, NOW + 1)
    assert bad.data["sets"] == []
    assert bad.sets["trunks"].set_id is None
    assert bad.sets["trunks"].issues[0].location == "spec.hashKey"


def test_the_older_set_keeps_a_contested_set_id() -> None:
    older = dset("first", {"setId": 1}, created="2030-01-01T00:00:00Z")
    newer = dset("second", {"setId": 1, "algorithm": 6}, created="2030-01-02T00:00:00Z")
    rendering = render([newer, older], {}, Memory(), NOW)
    assert [s["algorithm"] for s in rendering.data["sets"]] == ["round-robin"]
    assert str(rendering.sets["second"].issues[0]) == (
        "spec.setId: set 1 is already defined by DispatcherSet first"
    )


def test_deleting_a_set_removes_only_that_set() -> None:
    both = render([dset("trunks", STATIC), dset("asterisk", GATEWAYS)], SLICES, Memory(), NOW)
    one = render([dset("asterisk", GATEWAYS)], SLICES, both.memory, NOW + 1)
    assert [s["id"] for s in one.data["sets"]] == [2]
    assert one.data["sets"][0] == both.data["sets"][1]
    assert "trunks" not in one.memory.good


def test_probing_and_failover_come_from_the_lowest_set_id_and_others_are_warned() -> None:
    other = {"setId": 7, "probing": {"interval": 30}, "destinations": [{"uri": "sip:x.example"}]}
    rendering = render([dset("other", other), dset("trunks", STATIC)], {}, Memory(), NOW)
    assert rendering.data["probing"]["interval"] == 2
    assert rendering.sets["other"].warnings == (
        "spec.probing: ignored, the proxy uses the probing of DispatcherSet trunks",
    )
    assert rendering.sets["trunks"].warnings == ()


def test_a_static_destination_wins_over_the_same_address_as_an_endpoint() -> None:
    spec = {**GATEWAYS, "destinations": [{"uri": "sip:10.1.0.5:5080", "disabled": True}]}
    rendering = render([dset("asterisk", spec)], SLICES, Memory(), NOW)
    entries = [d for d in rendering.data["sets"][0]["destinations"] if "10.1.0.5" in d["uri"]]
    assert entries == [{"uri": "sip:10.1.0.5:5080", "disabled": True}]


@pytest.mark.parametrize(
    ("gateway", "ports", "expected"),
    [
        ({"service": "gw"}, [{"port": 5070, "protocol": "TCP"}], "sip:10.2.0.1:5070;transport=tcp"),
        (
            {"service": "gw", "port": 5071},
            [
                {"name": "a", "port": 5070, "protocol": "UDP"},
                {"name": "b", "port": 5071, "protocol": "UDP"},
            ],
            "sip:10.2.0.1:5071",
        ),
        (
            {"service": "gw"},
            [
                {"name": "rtp", "port": 10000, "protocol": "UDP"},
                {"name": "sip", "port": 5060, "protocol": "UDP"},
            ],
            "sip:10.2.0.1:5060",
        ),
        (
            {"service": "gw", "transport": "tcp"},
            [{"port": 5060, "protocol": "UDP"}],
            "sip:10.2.0.1:5060;transport=tcp",
        ),
    ],
)
def test_the_gateway_port_and_transport(
    gateway: dict[str, object], ports: list[dict[str, object]], expected: str
) -> None:
    slices = {"gw": [endpoint_slice("gw-1", [endpoint("10.2.0.1")], ports=ports)]}
    rendering = render([dset("gw", {"setId": 1, "gateways": [gateway]})], slices, Memory(), NOW)
    assert [d["uri"] for d in rendering.data["sets"][0]["destinations"]] == [expected]


def test_ipv6_endpoints_and_unusable_ports() -> None:
    slices = {
        "gw": [
            endpoint_slice("gw-v6", [endpoint("2001:db8::5")], address_type="IPv6"),
            endpoint_slice("gw-x", [endpoint("10.2.0.2")], ports=[{"name": "rtp", "port": 9}]),
        ]
    }
    rendering = render(
        [dset("gw", {"setId": 1, "gateways": [{"service": "gw", "port": "sip"}]})],
        slices,
        Memory(),
        NOW,
    )
    assert [d["uri"] for d in rendering.data["sets"][0]["destinations"]] == [
        "sip:[2001:db8::5]:5080"
    ]
    assert rendering.sets["gw"].warnings == (
        "gateways[0]: EndpointSlice gw-x has no usable port sip",
    )


def test_an_unreadable_memory_is_forgotten() -> None:
    assert Memory.from_json("{not json") == Memory()
    assert Memory.from_json(None) == Memory()


def test_a_gateway_in_another_namespace_serves_only_while_its_service_grants_it() -> None:
    spec = {"setId": 4, "gateways": [{"service": "pbx", "namespace": "telephony"}]}
    slices = {"telephony/pbx": [endpoint_slice("pbx-1", [endpoint("10.2.0.5", pod="pbx-0")])]}
    refused = render([dset("remote", spec)], slices, Memory(), NOW, Grants("voice", {}))
    remote = refused.sets["remote"]
    assert remote.set_id is None  # never good: not in the table
    assert [str(i) for i in remote.issues] == [
        "spec.gateways[0].namespace: Service telephony/pbx does not grant DispatcherSets of "
        "namespace voice (annotation sipdispatch.io/allow-dispatchersets-from on the Service)"
    ]
    elsewhere = Grants("voice", {"telephony/pbx": frozenset({"edge"})})
    assert render([dset("remote", spec)], slices, Memory(), NOW, elsewhere).sets["remote"].issues

    granted = Grants("voice", {"telephony/pbx": frozenset({"edge", "voice"})})
    served = render([dset("remote", spec)], slices, Memory(), NOW, granted)
    assert served.sets["remote"].issues == ()
    assert [d.uri for d in served.sets["remote"].destinations] == ["sip:10.2.0.5:5080"]

    # The grant withdrawn: the spec is refused again, the last good one keeps rendering, but
    # the Service's endpoints are no longer used: they drain out.
    revoked = render([dset("remote", spec)], slices, served.memory, NOW + 1, Grants("voice", {}))
    remote = revoked.sets["remote"]
    assert remote.issues
    assert remote.served_generation == 1
    assert [(d.uri, d.draining) for d in remote.destinations] == [("sip:10.2.0.5:5080", True)]


def test_a_gateway_naming_its_own_namespace_needs_no_grant() -> None:
    spec = {"setId": 4, "gateways": [{"service": "asterisk", "namespace": "voice"}]}
    slices = {"voice/asterisk": SLICES["asterisk"]}
    rendering = render([dset("own", spec)], slices, Memory(), NOW, Grants("voice", {}))
    assert rendering.sets["own"].issues == ()
    assert "sip:10.1.0.5:5080" in [d.uri for d in rendering.sets["own"].destinations]


def test_a_static_destinations_socket_reaches_the_table_the_proxy_loads() -> None:
    spec = {
        "setId": 1,
        "destinations": [{"uri": "sip:203.0.113.10:5060", "socket": "udp:10.0.0.2:5060"}],
    }
    rendering = render([dset("pinned", spec)], {}, Memory(), NOW)
    assert rendering.data["sets"][0]["destinations"] == [
        {"uri": "sip:203.0.113.10:5060", "socket": "udp:10.0.0.2:5060"}
    ]
    config = configfile.parse_config(rendering.text, "table.yaml")
    table = DestinationTable.build(config.to_table_config(), None, 0.0)
    assert [t.destination.socket for t in table.targets()] == ["udp:10.0.0.2:5060"]
