"""The DispatcherReport model: the one contract the proxy writes and the operator reads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sipdispatch.api import crd
from sipdispatch.api.names import API_VERSION, PROXY_LABEL
from sipdispatch.api.report import (
    DispatcherReportSpec,
    ReportedDestination,
    parse_timestamp,
    timestamp,
)

WHEN = 1_900_000_000.123


def spec(**changes: object) -> DispatcherReportSpec:
    fields: dict[str, object] = {
        "proxy": "sipdispatch",
        "replica": "sipdispatch-7d9-x2",
        "reportedAt": timestamp(WHEN),
        "heartbeatSeconds": 10,
        "destinations": [
            {"set": 1, "uri": "sip:10.0.0.5", "state": "AX", "eligible": False},
        ],
        **changes,
    }
    return DispatcherReportSpec.model_validate(fields)


def test_times_are_rfc3339_with_milliseconds_both_ways() -> None:
    assert timestamp(WHEN) == "2030-03-17T17:46:40.123Z"
    assert parse_timestamp(timestamp(WHEN)) == pytest.approx(WHEN)
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(None) is None


def test_a_report_is_current_for_three_heartbeats() -> None:
    assert spec().expires_at() == pytest.approx(WHEN + 30)
    assert spec(reportedAt="garbled").expires_at() is None


def test_every_destination_must_say_whether_it_takes_new_calls() -> None:
    with pytest.raises(ValidationError, match="eligible"):
        ReportedDestination.model_validate({"set": 1, "uri": "sip:10.0.0.5", "state": "AX"})
    assert spec().destinations[0].eligible is False


def test_the_manifest_round_trips_through_the_model() -> None:
    report = spec()
    body = report.manifest(name="sipdispatch-r1", namespace="voice", pod_uid="uid-1")
    assert (body["apiVersion"], body["kind"]) == (API_VERSION, "DispatcherReport")
    assert body["metadata"]["labels"] == {PROXY_LABEL: "sipdispatch"}
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "sipdispatch-7d9-x2", "uid": "uid-1"}
    ]
    assert body["spec"]["destinations"][0] == {
        "set": 1,
        "uri": "sip:10.0.0.5",
        "state": "AX",
        "eligible": False,
        "reason": "",
    }
    assert DispatcherReportSpec.model_validate(body["spec"]) == report
    unowned = report.manifest(name="sipdispatch-r1", namespace="voice")
    assert "ownerReferences" not in unowned["metadata"]


def test_the_crd_requires_what_the_model_requires() -> None:
    schema = crd.dispatcherreport_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    item = schema["properties"]["spec"]["properties"]["destinations"]["items"]
    assert sorted(item["required"]) == ["eligible", "set", "state", "uri"]
