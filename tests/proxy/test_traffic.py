"""Passive marking and call-load accounting from the core's events (`TrafficObserver`), applied
by the health owner (`HealthBook`) as the server wires them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from sipdispatch.dispatch import context, health
from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig
from sipdispatch.proxy.events import (
    BranchAnswered,
    BranchFailed,
    BranchStarted,
    CoreEvent,
    DialogEnded,
)
from sipdispatch.proxy.healthbook import HealthBook, HealthChange
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.settings import ProbeSettings
from sipdispatch.proxy.traffic import EventFeed

GW1 = "sip:127.0.0.2:5060"
GW2 = "sip:127.0.0.3:5060"
GW3 = "sip:127.0.0.4:5060"
PROBING = ProbeSettings.from_spec(ProbingSpec.model_validate({"failureThreshold": 3}))
POLICY = PROBING.policy


def build(
    uris: tuple[str, ...] = (GW1, GW2),
    previous: DestinationTable | None = None,
    algorithm: str = "round-robin",
    **fields: object,
) -> DestinationTable:
    dests = tuple(Destination.create(1, uri, **fields) for uri in uris)  # type: ignore[arg-type]
    config = TableConfig((SetConfig(1, dests, algorithm),))
    return DestinationTable.build(config, previous, 0.0, policy=POLICY)


class World:
    def __init__(
        self,
        passive: tuple[str, ...] = (),
        max_age: float = 100.0,
        uris: tuple[str, ...] = (GW1, GW2),
    ) -> None:
        self.table = build(uris)
        self.now = 0.0
        spec = ProbingSpec.model_validate({"failureThreshold": 3, "passiveCodes": list(passive)})
        self.book = HealthBook(
            ProbeSettings.from_spec(spec), clock=lambda: self.now, max_dialog_age=max_age
        )
        self.book.follow(self.table)
        self.traffic = self.book.traffic
        self.changes: list[HealthChange] = []
        self.book.watchers.append(self.changes.append)

    def observe(self, event: CoreEvent, now: float) -> None:
        """Hand one event to the health owner, as the engine does."""
        self.now = now
        self.book.observe([event])

    def code(self, uri: str) -> str:
        return self.table.find(1, uri).runtime.health.code

    def calls(self, uri: str) -> int:
        return self.table.find(1, uri).runtime.active_calls

    def fail(
        self,
        uri: str,
        status: int,
        now: float = 1.0,
        *,
        replied: bool = True,
        cancelled: bool = False,
    ) -> health.Event | None:
        """A branch to ``uri`` ended with ``status`` (a reply, or the core's own 408/503 when
        ``replied`` is False); the event of the change it made, if it made one."""
        seen = len(self.changes)
        key = DestinationKey.parse(1, uri)
        self.observe(BranchFailed(key, status, "c", replied, cancelled), now)
        return self.changes[-1].event if len(self.changes) > seen else None

    def time_out(self, uri: str, now: float = 1.0) -> health.Event | None:
        return self.fail(uri, 408, now, replied=False)

    def send(self, uri: str, call_id: str, now: float = 1.0, method: str = "INVITE") -> None:
        self.observe(BranchStarted(DestinationKey.parse(1, uri), method, call_id), now)

    def answer(self, uri: str, call_id: str, now: float = 1.0, method: str = "INVITE") -> None:
        """A request sent to ``uri`` and answered 2xx."""
        self.send(uri, call_id, now, method)
        self.observe(BranchAnswered(DestinationKey.parse(1, uri), 0.01, method, call_id), now)

    def reload(self, uris: tuple[str, ...]) -> None:
        self.table = build(uris, previous=self.table)
        self.book.follow(self.table)


# --- passive marking ---------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 503])
def test_timeouts_and_transport_errors_count_like_failed_probes(status: int) -> None:
    world = World()
    assert world.fail(GW1, status, replied=False) is None
    assert world.code(GW1) == "TP"
    world.fail(GW1, status, replied=False)
    event = world.fail(GW1, status, replied=False)
    assert isinstance(event, health.DestinationDown)
    assert world.code(GW1) == "IP"
    assert world.code(GW2) == "AP"


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 599, 486, 404, 403, 480, 487, 603])
def test_by_default_no_reply_counts_against_the_destination_that_sent_it(status: int) -> None:
    # Anyone can send an INVITE a gateway refuses: a reply proves the box is alive.
    world = World()
    for _ in range(5):
        assert world.fail(GW1, status) is None
    assert (world.code(GW1), world.code(GW2)) == ("AP", "AP")
    assert world.table.find(1, GW1).runtime.health.failures == 0


def test_replies_with_the_configured_passive_codes_count() -> None:
    world = World(passive=("5xx", "404"))
    for _ in range(3):
        world.fail(GW1, 486)
    assert world.code(GW1) == "AP"
    for _ in range(3):
        world.fail(GW1, 503)
    assert world.code(GW1) == "IP"
    for _ in range(3):
        world.fail(GW2, 404)
    assert world.code(GW2) == "TP"  # the last eligible destination: see below


def test_a_487_never_counts_even_when_its_class_is_configured() -> None:
    world = World(passive=("4xx",))
    for _ in range(5):
        assert world.fail(GW1, 487) is None
    assert world.code(GW1) == "AP"
    world.fail(GW1, 480)
    assert world.code(GW1) == "TP"


@pytest.mark.parametrize(("status", "replied"), [(480, True), (503, True), (408, False)])
def test_nothing_that_ends_a_cancelled_branch_counts(status: int, replied: bool) -> None:
    # The caller hung up (or Timer C, or another fork answered): how the branch ends says
    # nothing about the destination, whatever the passive codes say.
    world = World(passive=("4xx", "5xx"))
    for _ in range(5):
        assert world.fail(GW1, status, replied=replied, cancelled=True) is None
    assert world.code(GW1) == "AP"
    assert world.table.find(1, GW1).runtime.health.failures == 0


def test_traffic_never_takes_the_last_eligible_destination_of_a_set_out() -> None:
    world = World()
    for _ in range(3):
        world.time_out(GW1)
    assert world.code(GW1) == "IP"
    for _ in range(10):
        assert world.time_out(GW2) is None
    assert world.code(GW2) == "TP"  # still taking calls: the set has nowhere else to go
    assert world.book.spared == 8
    # Probes can: they are the proxy's own questions, not what a caller made happen.
    target = world.table.find(1, GW2)
    world.book.apply_probe(target, health.Result.timeout(1.0), 2.0)
    assert world.code(GW2) == "IP"


def test_the_last_eligible_destination_is_counted_in_its_own_set_only() -> None:
    world = World(uris=(GW1,))
    for _ in range(5):
        world.time_out(GW1)
    assert world.code(GW1) == "TP"
    world.reload((GW1, GW3))  # another destination to go to: now it may go
    world.time_out(GW1)
    assert world.code(GW1) == "IP"


def test_the_failure_reason_says_what_happened() -> None:
    world = World(passive=("500",))
    world.time_out(GW1)
    assert world.table.find(1, GW1).runtime.health.reason == "call timed out"
    world.fail(GW2, 500)
    assert world.table.find(1, GW2).runtime.health.reason == "call answered 500"
    world.fail(GW1, 503, replied=False)
    result = world.changes[-1].result
    assert result is not None
    assert result.reason == "call failed: transport error"


def test_a_call_answered_breaks_a_failure_streak() -> None:
    world = World()
    world.time_out(GW1)
    world.time_out(GW1)
    assert world.code(GW1) == "TP"
    world.answer(GW1, "c1")
    assert world.code(GW1) == "AP"
    world.time_out(GW1)
    world.time_out(GW1)
    assert world.code(GW1) == "TP"  # the streak started over


def test_admin_disabled_is_never_lifted_or_changed_by_traffic() -> None:
    world = World()
    world.table.set_state(1, GW1, "dx", 0.0)
    for _ in range(5):
        world.time_out(GW1)
    world.answer(GW1, "c1")
    assert world.code(GW1) == "DX"
    assert world.table.find(1, GW1).runtime.health.learned is health.HealthState.ACTIVE


def test_events_for_unknown_destinations_are_ignored() -> None:
    world = World()
    assert world.time_out("sip:10.9.9.9") is None
    world.observe(BranchFailed(DestinationKey.parse(7, GW1), 408, "c", replied=False), 1.0)
    assert world.changes == []
    world.observe(BranchAnswered(DestinationKey.parse(1, "sip:10.9.9.9"), 0.1, "INVITE", "x"), 1.0)
    assert world.traffic.dialogs == 0


def test_marking_follows_the_table_being_served() -> None:
    world = World()
    world.time_out(GW1)
    world.time_out(GW1)
    world.reload((GW1, GW3))  # GW2 removed, GW1 carried with its streak
    world.time_out(GW1)
    assert world.code(GW1) == "IP"
    assert world.time_out(GW2) is None


# --- call load ---------------------------------------------------------------------


def test_an_answered_invite_counts_a_call_until_its_bye() -> None:
    world = World()
    world.answer(GW1, "a")
    world.answer(GW1, "b")
    world.answer(GW2, "c")
    world.answer(GW2, "d", method="OPTIONS")  # not a dialog
    assert (world.calls(GW1), world.calls(GW2)) == (2, 1)
    world.observe(DialogEnded("a"), 2.0)
    world.observe(DialogEnded("a"), 2.0)  # a retransmitted BYE ends nothing more
    world.observe(DialogEnded("unknown"), 2.0)  # a dialog of another replica
    assert (world.calls(GW1), world.calls(GW2)) == (1, 1)
    assert world.traffic.dialogs == 2


def test_a_call_counts_from_the_moment_it_is_sent_until_its_branch_fails() -> None:
    world = World()
    world.send(GW1, "ringing")
    world.send(GW1, "refused")
    assert world.calls(GW1) == 2  # counted before any answer, as Kamailio counts at selection
    world.observe(BranchFailed(DestinationKey.parse(1, GW1), 486, "refused"), 1.5)
    assert world.calls(GW1) == 1
    world.observe(
        BranchFailed(DestinationKey.parse(1, GW1), 503, "ringing"), 1.6
    )  # then failed over
    world.send(GW2, "ringing")
    assert (world.calls(GW1), world.calls(GW2)) == (0, 1)


def test_dialogs_never_ended_stop_counting_after_the_max_age() -> None:
    world = World(max_age=100.0)
    world.answer(GW1, "old", now=0.0)
    world.answer(GW2, "mid", now=50.0)
    world.answer(GW1, "new", now=90.0)
    assert world.traffic.expire(99.0) == 0
    assert world.traffic.expire(100.0) == 1
    assert (world.calls(GW1), world.calls(GW2)) == (1, 1)
    assert world.traffic.expire(175.0) == 1
    assert (world.calls(GW1), world.calls(GW2)) == (1, 0)
    world.observe(DialogEnded("mid"), 176.0)  # its BYE after all: no double count
    assert world.calls(GW2) == 0
    assert world.traffic.expire(1000.0) == 1
    assert world.traffic.dialogs == 0
    assert world.calls(GW1) == 0


def test_two_dialogs_on_one_call_id_are_counted_and_ended_separately() -> None:
    # Parallel forking: two destinations answered the same INVITE.
    world = World(max_age=100.0)
    world.answer(GW1, "forked", now=0.0)
    world.answer(GW2, "forked", now=60.0)
    assert (world.calls(GW1), world.calls(GW2)) == (1, 1)
    assert world.traffic.expire(120.0) == 1  # only the older one is past the age
    assert (world.calls(GW1), world.calls(GW2)) == (0, 1)
    world.observe(DialogEnded("forked"), 121.0)
    assert (world.calls(GW1), world.calls(GW2)) == (0, 0)


def test_calls_survive_a_reload_and_end_on_the_carried_destination() -> None:
    world = World()
    world.answer(GW1, "a")
    world.reload((GW2, GW1))
    assert world.calls(GW1) == 1
    world.observe(DialogEnded("a"), 2.0)
    assert world.calls(GW1) == 0


def ctx(call_id: str) -> context.RequestContext:
    return context.RequestContext(call_id)


def test_call_load_selection_sees_the_counted_calls() -> None:
    world = World()
    world.table = build(algorithm="call-load", maxload=1)
    world.book.follow(world.table)
    world.answer(GW1, "a")
    assert [t.destination.uri for t in world.table.select(1, ctx("x"))] == [GW2]
    world.answer(GW2, "b")
    assert world.table.select(1, ctx("y")) == []
    world.observe(DialogEnded("a"), 2.0)
    assert [t.destination.uri for t in world.table.select(1, ctx("z"))] == [GW1]


def test_the_event_feed_counts_each_calls_events_and_passes_on_the_rest() -> None:
    """The engine hands events to `EventFeed` (compiled): call load and answers are counted
    there, health changes applied, the metrics read the answers tallied, and every other event
    reaches the interpreted observers unchanged."""
    world = World()
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry, lambda: world.table, lambda: 0)
    others: list[CoreEvent] = []
    feed = EventFeed(world.traffic, lambda: world.now, world.book.apply_traffic, others.extend)
    metrics.count_answers(feed.take_answered)
    gw1, gw2 = DestinationKey.parse(1, GW1), DestinationKey.parse(1, GW2)
    failed = BranchFailed(gw2, 503, "b")
    feed.feed([BranchStarted(gw1, "INVITE", "a"), BranchStarted(gw2, "INVITE", "b")])
    feed.feed([BranchAnswered(gw1, 0.01, "INVITE", "a"), failed])
    assert (world.calls(GW1), world.calls(GW2)) == (1, 1)
    assert others == [failed]  # the failure goes on as it came: the health owner releases it
    world.book.observe(others)
    assert world.calls(GW2) == 0
    labels = {"set": "1", "uri": GW1}
    assert registry.get_sample_value("sipdispatch_calls_answered_total", labels) == 1.0
    assert registry.get_sample_value("sipdispatch_destination_replies_total", {"class": "2xx"}) == 1
    feed.feed([BranchAnswered(gw1, 0.01, "BYE", "a"), DialogEnded("a")])
    assert world.calls(GW1) == 0
    assert registry.get_sample_value("sipdispatch_calls_answered_total", labels) == 2.0
    # a destination trying after a timeout is back to AP with a call's 2xx, through the feed
    world.time_out(GW1)
    assert world.code(GW1) == "TP"
    feed.feed([BranchStarted(gw1, "INVITE", "c"), BranchAnswered(gw1, 0.01, "INVITE", "c")])
    assert world.code(GW1) == "AP"
