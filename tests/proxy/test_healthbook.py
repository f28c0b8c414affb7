"""The health owner (`HealthBook`): every kind of fact goes through it, with its clock moved by
hand, and every change is logged and counted once."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sipdispatch.dispatch import health
from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig
from sipdispatch.proxy.events import BranchFailed, ProbeCompleted
from sipdispatch.proxy.healthbook import HealthBook, HealthChange
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.settings import ProbeSettings

GW1 = "sip:127.0.0.2:5060"
GW2 = "sip:127.0.0.3:5060"
GW3 = "sip:127.0.0.4:5060"


def probing(**fields: object) -> ProbeSettings:
    return ProbeSettings.from_spec(ProbingSpec.model_validate(fields))


def table(*uris: str, previous: DestinationTable | None = None) -> DestinationTable:
    dests = tuple(Destination.create(1, uri) for uri in uris)
    return DestinationTable.build(TableConfig((SetConfig(1, dests),)), previous, 0.0)


def timed_out(uri: str) -> BranchFailed:
    """A call to ``uri`` that got no reply in time."""
    return BranchFailed(DestinationKey.parse(1, uri), 408, "c", replied=False)


class Book:
    """A book on a hand-moved clock, with real metrics and a list of what it told."""

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self.now = 0.0
        self.registry = CollectorRegistry()
        self.table = table(GW1, GW2)
        metrics = ProxyMetrics(self.registry, lambda: self.table, lambda: 0)
        self.book = HealthBook(
            settings or probing(failureThreshold=2),
            clock=lambda: self.now,
            max_dialog_age=100.0,
            metrics=metrics,
        )
        self.book.follow(self.table)
        self.changes: list[HealthChange] = []
        self.book.watchers.append(self.changes.append)

    def code(self, uri: str) -> str:
        return self.table.find(1, uri).runtime.health.code

    def metric(self, text: str) -> float:
        for line in generate_latest(self.registry).decode().splitlines():
            if line.startswith(text):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def test_changes_name_the_destination_by_its_key_and_say_where_they_came_from() -> None:
    book = Book()
    book.book.observe([timed_out(GW1)])
    book.book.set_state(1, "sip:127.0.0.3", "dx")  # however the URI is spelled
    assert [(c.key, c.source, c.previous, c.code) for c in book.changes] == [
        (DestinationKey(1, "sip:127.0.0.2:5060;transport=udp"), "traffic", "AP", "TP"),
        (DestinationKey(1, "sip:127.0.0.3:5060;transport=udp"), "set-state", "AP", "DX"),
    ]
    assert isinstance(book.changes[1].event, health.DestinationDown)
    assert (
        book.metric(
            f'sipdispatch_destination_health_events_total{{event="down",set="1",uri="{GW2}"}}'
        )
        == 1
    )


def test_set_state_needs_a_table_and_a_known_destination() -> None:
    book = HealthBook(probing(), clock=lambda: 0.0, max_dialog_age=1.0)
    with pytest.raises(LookupError, match="no destination table"):
        book.set_state(1, GW1, "dx")
    book.follow(table(GW1))
    with pytest.raises(LookupError, match="no destination"):
        book.set_state(1, GW2, "dx")
    with pytest.raises(health.InvalidStateError):
        book.set_state(1, GW1, "zz")


def test_a_retry_after_drain_ends_when_the_book_expires_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sipdispatch.proxy.healthbook")
    book = Book()
    target = book.table.find(1, GW1)
    book.book.apply(target, health.Result.overloaded(5.0), "probe", 1.0)
    assert book.code(GW1) == "DR"
    book.now = 5.9
    book.book.expire(book.now)
    assert book.code(GW1) == "DR"
    book.now = 6.0
    book.book.expire(book.now)
    assert book.code(GW1) == "AP"
    assert [c.source for c in book.changes] == ["probe", "drain"]
    assert f"set 1 destination {GW1}: DR -> AP (drain: Retry-After elapsed) UP" in caplog.messages


def test_new_thresholds_apply_to_the_next_result() -> None:
    book = Book(probing(failureThreshold=3))
    book.book.observe(
        [
            timed_out(GW1),
            timed_out(GW1),
        ]
    )
    assert book.code(GW1) == "TP"
    book.book.configure(probing(failureThreshold=2))
    book.book.observe([timed_out(GW1)])
    assert book.code(GW1) == "IP"


def test_without_a_prober_probe_completions_are_ignored() -> None:
    book = Book()
    book.book.observe([ProbeCompleted("p1", DestinationKey.parse(1, GW1), 408, None)])
    assert book.changes == []
    assert book.code(GW1) == "AP"


def test_a_reload_keeps_serving_the_carried_records() -> None:
    book = Book()
    book.book.observe([timed_out(GW1)])
    book.table = table(GW1, GW3, previous=book.table)
    book.book.follow(book.table)
    book.book.observe(
        [
            timed_out(GW1),
            timed_out(GW2),
        ]
    )
    assert book.code(GW1) == "IP"  # the streak went on in the carried record
    assert [c.source for c in book.changes] == ["traffic", "traffic"]  # GW2 is gone
