"""Replica reports folded into a DispatcherSet's status, conditions and events (pure)."""

from __future__ import annotations

from typing import Any

from opfixtures import dset, endpoint, endpoint_slice, report

from sipdispatch.api.report import parse_timestamp as parse_time
from sipdispatch.api.report import timestamp as iso
from sipdispatch.operator.memory import Memory
from sipdispatch.operator.render import SetRendering, render
from sipdispatch.operator.status import (
    StatusResult,
    next_stale,
    read_reports,
    replica_views,
    set_status,
)

NOW = parse_time("2030-01-01T00:00:10.000Z") or 0.0
A = "sip:10.1.0.5:5080"
B = "sip:10.1.0.7:5080"
SPEC = {"setId": 2, "gateways": [{"service": "asterisk"}], "drainGraceSeconds": 30}
SLICES = {
    "asterisk": [
        endpoint_slice(
            "asterisk-x",
            [
                endpoint("10.1.0.5", pod="asterisk-0"),
                endpoint("10.1.0.7", pod="asterisk-1"),
                endpoint("10.1.0.11", ready=False, pod="asterisk-2"),
            ],
        )
    ]
}


def rendering(spec: dict[str, Any] | None = None, *, generation: int = 1) -> SetRendering:
    return render(
        [dset("asterisk", spec or SPEC, generation=generation)], SLICES, Memory(), NOW
    ).sets["asterisk"]


def status_of(
    reports: list[dict[str, Any]],
    previous: dict[str, Any] | None = None,
    *,
    set_rendering: SetRendering | None = None,
    now: float = NOW,
) -> StatusResult:
    views = replica_views(read_reports(reports), now)
    return set_status(set_rendering or rendering(), 1, views, previous, now)


def conditions(result: StatusResult) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result.status["conditions"]}


def test_before_any_report_ready_is_unknown() -> None:
    result = status_of([])
    assert conditions(result) == {
        "Ready": ("Unknown", "NoReports"),
        "Reconciling": ("True", "AwaitingReports"),
        "Stalled": ("False", "Valid"),
        "Degraded": ("False", "AsExpected"),
    }
    states = {d["uri"]: (d["state"], d["origin"]) for d in result.status["destinations"]}
    assert states == {
        A: ("Unknown", "pod/asterisk-0"),
        B: ("Unknown", "pod/asterisk-1"),
        "sip:10.1.0.11:5080": ("NotReady", "pod/asterisk-2"),
    }
    assert result.status["upTotal"] == "0/2"
    assert result.status["counts"]["notReady"] == 1
    assert result.events == []


def test_replicas_that_agree() -> None:
    reports = [
        report("r1", [(2, A, "AP"), (2, B, "AP")], latency_ms=1.0),
        report("r2", [(2, A, "AP"), (2, B, "AP")], latency_ms=3.0),
    ]
    result = status_of(reports)
    assert conditions(result)["Ready"] == ("True", "DestinationsUp")
    assert result.status["replicas"] == 2
    assert result.status["upTotal"] == "2/2"
    first = result.status["destinations"][0]
    assert (first["uri"], first["state"], first["seenBy"], first["latencyMs"]) == (A, "AP", 2, 2.0)
    assert first["lastChange"] == "2029-12-31T23:59:00.000Z"
    assert result.status["algorithm"] == "round-robin"


def test_the_majority_wins_and_a_tie_goes_to_the_worse_state() -> None:
    reports = [
        report("r1", [(2, A, "AP"), (2, B, "AP")]),
        report("r2", [(2, A, "IP"), (2, B, "AP")]),
        report("r3", [(2, A, "IP"), (2, B, "IP")]),
        report("r4", [(2, A, "AP"), (2, B, "IP")]),
    ]
    result = status_of(reports[:3])
    states = {d["uri"]: (d["state"], d["seenBy"]) for d in result.status["destinations"]}
    assert states[A] == ("IP", 2)
    assert states[B] == ("AP", 2)
    assert conditions(result)["Degraded"] == ("True", "DestinationsDown")
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert "replicas disagree about" in degraded["message"]
    tie = status_of(reports)
    assert {d["uri"]: d["state"] for d in tie.status["destinations"]}[B] == "IP"


def test_stale_reports_are_ignored() -> None:
    old = report("r1", [(2, A, "IP")], reported_at="2030-01-01T00:00:00.000Z", heartbeat=2.0)
    fresh = report("r2", [(2, A, "AP"), (2, B, "AP")], reported_at="2030-01-01T00:00:09.000Z")
    assert [v.replica for v in replica_views(read_reports([old, fresh]), NOW)] == ["r2"]
    assert next_stale(read_reports([old, fresh]), NOW) == parse_time("2030-01-01T00:01:39.000Z")
    assert status_of([old, fresh]).status["replicas"] == 1
    # r1 was still fresh at 00:00:05: its report counted then.
    assert [v.replica for v in replica_views(read_reports([old, fresh]), NOW - 5)] == ["r1", "r2"]


def test_uris_match_however_they_are_spelled() -> None:
    result = status_of([report("r1", [(2, "SIP:10.1.0.5:5080;transport=UDP", "AP")])])
    assert result.status["destinations"][0]["state"] == "AP"


def test_events_when_a_destination_goes_down_and_comes_back() -> None:
    up = status_of([report("r1", [(2, A, "AP"), (2, B, "AP")])])
    assert up.events == []  # first reports: nothing changed, nothing to tell
    down = status_of([report("r1", [(2, A, "IP"), (2, B, "AP")], reason="3 failures")], up.status)
    assert [(e.type, e.reason) for e in down.events] == [("Warning", "DestinationDown")]
    assert down.events[0].message == (
        f"set 2 {A} (pod/asterisk-0): AP -> IP on 1/1 replicas (3 failures)"
    )
    back = status_of([report("r1", [(2, A, "AP"), (2, B, "AP")])], down.status)
    assert [(e.type, e.reason) for e in back.events] == [("Normal", "DestinationUp")]


def test_draining_and_removal() -> None:
    up = status_of([report("r1", [(2, A, "AP"), (2, B, "AP")])])
    terminating = {
        "asterisk": [
            endpoint_slice(
                "asterisk-x",
                [
                    endpoint("10.1.0.5", pod="asterisk-0"),
                    endpoint("10.1.0.7", ready=False, serving=True, terminating=True, pod="a-1"),
                ],
            )
        ]
    }
    drained = render([dset("asterisk", SPEC)], terminating, Memory(), NOW).sets["asterisk"]
    result = status_of(
        [report("r1", [(2, A, "AP"), (2, B, "DR")])], up.status, set_rendering=drained
    )
    dest = {d["uri"]: d for d in result.status["destinations"]}[B]
    assert (dest["state"], dest["reason"]) == ("DR", "endpoint terminating")
    assert result.status["counts"]["draining"] == 1
    assert [e.reason for e in result.events] == ["DestinationDraining"]  # not-ready: no event
    assert conditions(result)["Degraded"] == ("False", "AsExpected")


def test_a_gone_endpoint_says_when_it_leaves() -> None:
    first = render([dset("asterisk", SPEC)], SLICES, Memory(), NOW)
    gone = render([dset("asterisk", SPEC)], {}, first.memory, NOW).sets["asterisk"]
    result = status_of([report("r1", [(2, A, "DR"), (2, B, "DR")])], set_rendering=gone)
    assert result.status["destinations"][0]["reason"] == (
        f"endpoint gone; removed from the table at {iso(NOW + 30)}"
    )


def test_an_invalid_spec_names_the_field_once_per_generation() -> None:
    good = render([dset("asterisk", SPEC, generation=1)], SLICES, Memory(), NOW)
    bad_spec = {**SPEC, "hashKey": "X-Queue"}
    bad = render([dset("asterisk", bad_spec, generation=2)], SLICES, good.memory, NOW)
    reports = [report("r1", [(2, A, "AP"), (2, B, "AP")])]
    before = status_of(reports)
    result = set_status(
        bad.sets["asterisk"], 2, replica_views(read_reports(reports), NOW), before.status, NOW
    )
    stalled = next(c for c in result.status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert stalled["message"] == (
        "spec.hashKey: only used by algorithm hash-key, not round-robin "
        "(the table keeps serving generation 1)"
    )
    assert stalled["observedGeneration"] == 2
    # The change is not rolled out: not Ready, whatever the last good generation still serves
    # (GitOps tools must not report a refused change as applied).
    assert conditions(result)["Ready"] == ("False", "InvalidSpec")
    assert conditions(result)["Reconciling"] == ("False", "InvalidSpec")
    assert result.status["counts"]["up"] == 2  # the destinations of generation 1 still take calls
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "InvalidSpec")]
    again = set_status(
        bad.sets["asterisk"], 2, replica_views(read_reports(reports), NOW), result.status, NOW + 5
    )
    assert again.events == []
    assert again.status == result.status  # nothing moved, not even transition times


def test_transition_times_hold_while_the_status_holds() -> None:
    first = status_of([], now=NOW)
    later = status_of([], first.status, now=NOW + 60)
    assert later.status == first.status
    ready = status_of([report("r1", [(2, A, "AP")])], first.status, now=NOW + 60)
    stamps = {c["type"]: c["lastTransitionTime"] for c in ready.status["conditions"]}
    assert stamps["Ready"] == iso(NOW + 60)
    assert stamps["Stalled"] == iso(NOW)
    assert stamps["Reconciling"] == iso(NOW + 60)


def test_a_destination_coming_up_is_not_up_until_the_replicas_send_it_calls() -> None:
    down = status_of([report("r1", [(2, A, "IP"), (2, B, "IP")])])
    coming_up = status_of([report("r1", [(2, A, "AX", False), (2, B, "IP")])], down.status)
    assert coming_up.status["upTotal"] == "0/2"
    assert coming_up.status["destinations"][0]["eligible"] is False
    assert conditions(coming_up)["Ready"] == ("False", "NoDestinationsUp")
    assert coming_up.status["counts"]["down"] == 2
    assert coming_up.events == []  # still down: not worth an event
    up = status_of([report("r1", [(2, A, "AP"), (2, B, "IP")])], coming_up.status)
    assert up.status["upTotal"] == "1/2"
    assert conditions(up)["Ready"] == ("True", "DestinationsUp")
    assert [(e.reason, e.message.split(": ")[1]) for e in up.events] == [
        ("DestinationUp", "AX -> AP on 1/1 replicas (AP by r1)")
    ]


def test_ax_active_and_not_probed_is_up() -> None:
    coming_up = status_of([report("r1", [(2, A, "AX", False), (2, B, "AP")])])
    active = status_of([report("r1", [(2, A, "AX", True), (2, B, "AP")])], coming_up.status)
    assert active.status["upTotal"] == "2/2"
    assert [(e.reason, e.message.split(": ")[1]) for e in active.events] == [
        ("DestinationUp", "AX, now eligible for new calls on 1/1 replicas (AX by r1)")
    ]


def test_replicas_that_disagree_about_eligibility_tie_to_not_eligible() -> None:
    reports = [
        report("r1", [(2, A, "AX", True), (2, B, "AP")]),
        report("r2", [(2, A, "AX", False), (2, B, "AP")]),
    ]
    result = status_of(reports)
    first = result.status["destinations"][0]
    assert (first["state"], first["eligible"], first["seenBy"]) == ("AX", False, 1)
    assert result.status["upTotal"] == "1/2"


def test_a_down_destination_shows_no_latency_the_probe_timeout_is_not_a_round_trip() -> None:
    reports = [
        report("r1", [(2, A, "IP"), (2, B, "AP")], latency_ms=1000.0),
        report("r2", [(2, A, "AP"), (2, B, "AP")], latency_ms=4.0),
        report("r3", [(2, A, "IP"), (2, B, "AP")], latency_ms=6.0),
    ]
    destinations = {d["uri"]: d for d in status_of(reports).status["destinations"]}
    assert destinations[A]["state"] == "IP"
    assert "latencyMs" not in destinations[A]
    assert destinations[B]["latencyMs"] == 6.0  # the median of the three that see it up


def test_a_dns_name_shows_its_addresses_under_it_or_why_it_has_none() -> None:
    spec = {"setId": 2, "destinations": [{"uri": "sip:svc.example.com"}, {"uri": "sip:nx.test"}]}
    body = report("r1", [(2, "sip:10.2.0.1:5070", "AP"), (2, "sip:10.2.0.2:5070", "IP")])
    entries = body["spec"]["destinations"]
    for entry in entries:
        entry["name"] = "sip:svc.example.com"
    entries.append(
        {
            "set": 2,
            "uri": "sip:nx.test",
            "name": "sip:nx.test",
            "state": "IX",
            "eligible": False,
            "reason": "dns: NXDOMAIN (SRV _sip._udp.nx.test)",
        }
    )
    result = status_of([body], set_rendering=rendering(spec))
    rows = [
        (d["uri"], d.get("name"), d["state"], d["reason"]) for d in result.status["destinations"]
    ]
    assert rows == [
        ("sip:nx.test", "sip:nx.test", "IX", "dns: NXDOMAIN (SRV _sip._udp.nx.test)"),
        ("sip:10.2.0.1:5070", "sip:svc.example.com", "AP", "AP by r1"),
        ("sip:10.2.0.2:5070", "sip:svc.example.com", "IP", "IP by r1"),
    ]
    assert result.status["upTotal"] == "1/3"
    assert conditions(result)["Degraded"][0] == "True"
