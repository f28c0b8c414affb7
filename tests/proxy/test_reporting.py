"""The proxy's side of the status: when reports are written and what they say."""

from __future__ import annotations

from sipdispatch.api.report import DispatcherReportSpec
from sipdispatch.dispatch import health
from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig
from sipdispatch.proxy.reporting import ReportSchedule, fingerprint, report_body, report_name

A = "sip:10.1.0.5:5080"
B = "sip:10.1.0.7:5080;transport=tcp"


def table() -> DestinationTable:
    config = TableConfig(
        (SetConfig(2, (Destination.create(2, A), Destination.create(2, B, draining=True))),)
    )
    return DestinationTable.build(config, None, 100.0)


def test_the_first_report_goes_at_once_then_changes_are_coalesced() -> None:
    schedule = ReportSchedule(min_interval=1.0, heartbeat=30.0)
    assert schedule.due("a", 0.0)
    schedule.done("a", 0.0)
    assert not schedule.due("a", 0.5)
    assert not schedule.due("b", 0.5)  # changed, but too soon: waits
    assert schedule.due("b", 1.0)
    schedule.done("c", 1.0)  # what is sent is the state at send time
    assert not schedule.due("c", 30.9)
    assert schedule.due("c", 31.0)  # heartbeat


def test_failures_back_off_up_to_a_heartbeat() -> None:
    schedule = ReportSchedule(min_interval=1.0, heartbeat=10.0)
    schedule.failed(0.0, 1)
    assert not schedule.due("a", 1.9)
    assert schedule.due("a", 2.0)
    schedule.failed(2.0, 8)
    assert not schedule.due("a", 11.9)
    assert schedule.due("a", 12.0)


def test_fingerprint_notices_states_and_a_first_latency_not_latency_values() -> None:
    live = table()
    before = fingerprint(live, "1")
    target = next(live.targets())
    health.apply(
        target.runtime.health, health.Result.success(rtt=0.002), health.HealthPolicy(), 101
    )
    measured = fingerprint(live, "1")
    assert measured != before
    health.apply(
        target.runtime.health, health.Result.success(rtt=0.009), health.HealthPolicy(), 102
    )
    assert fingerprint(live, "1") == measured
    assert fingerprint(live, "2") != measured  # a new table
    health.set_admin_state(target.runtime.health, "dx", 103)
    assert fingerprint(live, "2") != fingerprint(table(), "2")


def test_the_report_is_a_valid_dispatcher_report() -> None:
    live = table()
    target = next(live.targets())
    health.apply(
        target.runtime.health, health.Result.success(rtt=0.0123), health.HealthPolicy(), 101
    )
    body = report_body(
        live,
        proxy="sipdispatch",
        replica="sipdispatch-7d9-x2",
        namespace="voice",
        version="42",
        heartbeat=30.0,
        wall_now=1_900_000_000.0,
        clock_offset=1_899_999_000.0,
        pod_uid="abc",
    )
    assert body["metadata"]["name"] == "sipdispatch-sipdispatch-7d9-x2"
    assert body["metadata"]["ownerReferences"][0]["kind"] == "Pod"
    spec = DispatcherReportSpec.model_validate(body["spec"])
    assert spec.table == "42"
    assert [(d.uri, d.state, d.eligible) for d in spec.destinations] == [
        (A, "AP", True),
        (B, "DR", False),
    ]
    assert spec.destinations[0].latency_ms == 12.3
    assert spec.destinations[1].latency_ms is None
    assert spec.destinations[0].changed_at == "2030-03-17T17:31:40.000Z"  # built at 100


def test_report_names_are_valid_object_names() -> None:
    assert report_name("sipdispatch", "My_Host.Local") == "sipdispatch-my-host.local"
    assert len(report_name("p", "x" * 400)) == 253


INACTIVE_MODE = health.HealthPolicy(
    failure_threshold=1, success_threshold=2, mode=health.ProbingMode.INACTIVE
)


def reported(live: DestinationTable) -> list[tuple[str, bool]]:
    body = report_body(
        live,
        proxy="sipdispatch",
        replica="r1",
        namespace="voice",
        version="1",
        heartbeat=30.0,
        wall_now=1_900_000_000.0,
        clock_offset=0.0,
    )
    spec = DispatcherReportSpec.model_validate(body["spec"])
    return [(d.state, d.eligible) for d in spec.destinations if d.uri == A]


def test_ax_is_reported_eligible_or_not_as_selection_decides() -> None:
    live = table()
    record = next(live.targets()).runtime.health
    health.apply(record, health.Result.timeout(1.0), INACTIVE_MODE, 101)
    assert reported(live) == [("IP", False)]
    health.apply(record, health.Result.success(rtt=0.001), INACTIVE_MODE, 102)
    coming_up = fingerprint(live, "1")
    assert reported(live) == [("AX", False)]  # answering, below the success threshold
    assert A not in {t.destination.uri for t in live.sets[2].eligible()}
    health.apply(record, health.Result.success(rtt=0.001), INACTIVE_MODE, 103)
    assert reported(live) == [("AX", True)]  # active, no longer probed in mode inactive
    assert A in {t.destination.uri for t in live.sets[2].eligible()}
    assert fingerprint(live, "1") != coming_up  # the same code, yet worth a report
