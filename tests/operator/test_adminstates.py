"""``spec.adminStates``: holds on destinations, rendered into the table every replica reads."""

from __future__ import annotations

from typing import Any

import pytest
from opfixtures import dset, endpoint, endpoint_slice, report

from sipdispatch.api.report import timestamp
from sipdispatch.dispatch import configfile
from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.operator.memory import Memory
from sipdispatch.operator.render import TableRendering, render
from sipdispatch.operator.specs import parse_spec
from sipdispatch.operator.status import read_reports, replica_views, set_status

NOW = 1_900_000_000.0
SLICES = {
    "asterisk": [
        endpoint_slice(
            "asterisk-abc",
            [
                endpoint("10.1.0.5", pod="asterisk-0"),
                endpoint("10.1.0.7", pod="asterisk-1"),
                endpoint("10.1.0.9", ready=False, serving=True, terminating=True, pod="ast-2"),
            ],
        )
    ]
}
SPEC: dict[str, Any] = {
    "setId": 1,
    "destinations": [{"uri": "sip:203.0.113.10:5060"}, {"uri": "sip:203.0.113.11:5060"}],
    "gateways": [{"service": "asterisk", "port": "sip"}],
}


def rendered(admin_states: list[dict[str, Any]], slices: Any = None) -> TableRendering:
    spec = {**SPEC, "adminStates": admin_states}
    return render([dset("voice", spec)], SLICES if slices is None else slices, Memory(), NOW)


def states_loaded(rendering: TableRendering) -> dict[str, str]:
    """What a proxy replica makes of the table: URI -> two-letter state."""
    config = configfile.parse_config(rendering.text, "table.yaml")
    table = DestinationTable.build(config.to_table_config(), None, 0.0)
    return {t.destination.uri: t.runtime.health.code for t in table.targets()}


def test_holds_by_uri_and_by_pod_reach_the_table_the_proxy_loads() -> None:
    rendering = rendered(
        [
            {"uri": "SIP:203.0.113.11", "state": "disabled"},  # spelled otherwise: one place
            {"pod": "asterisk-1", "state": "draining", "reason": "kernel upgrade"},
            {"uri": "sip:10.1.0.9:5080", "state": "disabled"},  # terminating too: DX wins
        ]
    )
    assert states_loaded(rendering) == {
        "sip:203.0.113.10:5060": "AP",
        "sip:203.0.113.11:5060": "DX",
        "sip:10.1.0.5:5080": "AP",
        "sip:10.1.0.7:5080": "DR",
        "sip:10.1.0.9:5080": "DX",
    }
    held = {d.uri: d.held for d in rendering.sets["voice"].destinations if d.held}
    assert held == {
        "sip:203.0.113.11:5060": "spec.adminStates[0]: disabled",
        "sip:10.1.0.7:5080": "spec.adminStates[1]: draining (kernel upgrade)",
        "sip:10.1.0.9:5080": "spec.adminStates[2]: disabled",
    }


def test_a_hold_by_pod_follows_the_pod_to_a_new_address() -> None:
    moved = {"asterisk": [endpoint_slice("asterisk-abc", [endpoint("10.1.0.8", pod="asterisk-1")])]}
    rendering = rendered([{"pod": "asterisk-1", "state": "disabled"}], moved)
    assert states_loaded(rendering)["sip:10.1.0.8:5080"] == "DX"


def test_lifting_a_hold_restores_the_table_exactly() -> None:
    assert rendered([]).text == render([dset("voice", SPEC)], SLICES, Memory(), NOW).text
    held = rendered([{"uri": "sip:10.1.0.5:5080", "state": "disabled"}])
    assert "disabled: true" in held.text
    assert rendered([]).text != held.text


def test_a_hold_on_no_destination_waits_for_one() -> None:
    rendering = rendered([{"uri": "sip:192.0.2.1", "state": "disabled"}])
    assert set(states_loaded(rendering).values()) == {"AP", "DR"}
    assert rendering.sets["voice"].issues == ()
    assert rendering.sets["voice"].warnings == ()


@pytest.mark.parametrize(
    ("admin_states", "where", "why"),
    [
        ([{"uri": "sip:10.1.0.5", "state": "off"}], "spec.adminStates[0].state", "'disabled'"),
        ([{"uri": "tel:+4930", "state": "disabled"}], "spec.adminStates[0].uri", "not a SIP URI"),
        ([{"state": "disabled"}], "spec.adminStates[0]", "uri or its pod"),
        (
            [{"uri": "sip:10.1.0.5", "pod": "asterisk-0", "state": "disabled"}],
            "spec.adminStates[0]",
            "uri or its pod",
        ),
        (
            [
                {"uri": "sip:10.1.0.5:5060", "state": "disabled"},
                {"uri": "sip:10.1.0.5", "state": "draining"},
            ],
            "spec.adminStates[1].uri",
            "same destination as adminStates[0]",
        ),
    ],
)
def test_bad_holds_name_the_field(admin_states: list[dict[str, Any]], where: str, why: str) -> None:
    parsed, issues = parse_spec({**SPEC, "adminStates": admin_states})
    assert parsed is None
    assert [i.location for i in issues] == [where]
    assert why in issues[0].message


def test_a_bad_hold_keeps_the_last_good_table() -> None:
    good = rendered([{"uri": "sip:10.1.0.5:5080", "state": "disabled"}])
    spec = {**SPEC, "adminStates": [{"uri": "sip:10.1.0.5:5080", "state": "dx"}]}
    bad = render([dset("voice", spec, generation=2)], SLICES, good.memory, NOW + 1)
    assert bad.text == good.text
    assert [i.location for i in bad.sets["voice"].issues] == ["spec.adminStates[0].state"]


def test_the_status_says_which_entry_holds_a_destination() -> None:
    voice = rendered([{"uri": "sip:10.1.0.5:5080", "state": "disabled", "reason": "ticket 42"}])
    seen = [(1, "sip:10.1.0.5:5080", "DX"), (1, "sip:10.1.0.7:5080", "AP")]
    reports = [report(r, seen, reported_at=timestamp(NOW - 1)) for r in ("r1", "r2")]
    views = replica_views(read_reports(reports), NOW)
    status = set_status(voice.sets["voice"], 1, views, None, NOW).status
    dest = {d["uri"]: d for d in status["destinations"]}["sip:10.1.0.5:5080"]
    assert (dest["state"], dest["seenBy"]) == ("DX", 2)
    assert dest["reason"] == "spec.adminStates[0]: disabled (ticket 42)"
    assert status["counts"]["disabled"] == 1


def test_the_status_says_how_max_load_adds_up_over_the_replicas() -> None:
    limited = {"setId": 1, "destinations": [{"uri": "sip:203.0.113.10", "maxLoad": 3}]}
    trunks = render([dset("trunks", limited)], {}, Memory(), NOW).sets["trunks"]
    seen = [(1, "sip:203.0.113.10:5060", "AP")]
    reports = [report(r, seen, reported_at=timestamp(NOW - 1)) for r in ("r1", "r2")]
    status = set_status(trunks, 1, replica_views(read_reports(reports), NOW), None, NOW).status
    assert status["callLoad"].startswith(
        "maxLoad counts calls per proxy replica: 2 replicas report, so a destination takes "
        "up to 2 x its maxLoad"
    )
    unlimited = rendered([]).sets["voice"]
    assert "callLoad" not in set_status(unlimited, 1, [], None, NOW).status
