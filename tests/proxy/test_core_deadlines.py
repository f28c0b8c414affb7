"""When the core acts next: the timer heap of its records, and the answers it keeps to answer
retransmitted requests after their transaction has finished."""

from __future__ import annotations

import gc

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core import Hop
from sipdispatch.proxy.core.deadlines import Deadlines, RecentAnswers, Timed
from sipdispatch.proxy.core.listeners import Listener
from sipdispatch.proxy.core.probing import Probe
from sipdispatch.sip.transaction import ClientTransaction, Timers

CALLER = ("127.0.0.1", 5070)
UDP = Listener("udp:127.0.0.1:5060", "udp", ("127.0.0.1", 5060), ("127.0.0.1", 5060))
TCP = Listener("tcp:127.0.0.1:5060", "tcp", ("127.0.0.1", 5060), ("127.0.0.1", 5060))
INVITE_KEEP = 8.0  # 2 x T2
OTHER_KEEP = 32.0  # 64 x T1


def _alarm(at: float) -> Probe:
    """A real record whose deadline is ``at``: a probe over TCP (no retransmissions, Timer F
    at 32 s) whose own timeout comes first. The tests move it through ``give_up_at``."""
    client = ClientTransaction(invite=False, reliable=True, now=0.0, timers=Timers())
    probe = Probe(
        "p",
        Hop("127.0.0.2", 5060, "tcp", DestinationKey.parse(1, "sip:127.0.0.2:5060;transport=tcp")),
        b"",
        client,
        0.0,
    )
    probe.give_up_at = at
    return probe


def _due(deadlines: Deadlines, now: float) -> list[Timed]:
    fired = []
    while (target := deadlines.pop_due(now)) is not None:
        fired.append(target)
    return fired


def test_records_come_due_in_deadline_order_and_only_once() -> None:
    deadlines = Deadlines()
    late, early = _alarm(2.0), _alarm(1.0)
    deadlines.schedule(late)
    deadlines.schedule(early)
    assert deadlines.next_deadline() == 1.0
    assert _due(deadlines, 0.9) == []
    assert _due(deadlines, 2.0) == [early, late]
    assert _due(deadlines, 3.0) == []
    assert deadlines.next_deadline() is None


def test_a_moved_deadline_fires_at_its_new_time_not_the_old_one() -> None:
    deadlines = Deadlines()
    alarm = _alarm(1.0)
    deadlines.schedule(alarm)
    alarm.give_up_at = 5.0
    deadlines.schedule(alarm)
    assert deadlines.next_deadline() == 5.0  # the 1.0 entry is stale and skipped
    assert _due(deadlines, 4.9) == []
    assert _due(deadlines, 5.0) == [alarm]


def test_an_unscheduled_record_never_fires() -> None:
    deadlines = Deadlines()
    kept, dropped = _alarm(1.0), _alarm(1.0)
    deadlines.schedule(kept)
    deadlines.schedule(dropped)
    deadlines.unschedule(dropped)
    assert _due(deadlines, 1.0) == [kept]
    dropped.client.terminate()
    deadlines.schedule(dropped)  # a finished probe has no deadline: nothing to schedule
    assert deadlines.next_deadline() is None


def test_stale_entries_are_compacted_away() -> None:
    deadlines = Deadlines()
    alarms = [_alarm(10.0 + i) for i in range(100)]
    for step in range(50):
        for alarm in alarms:
            alarm.give_up_at = (
                10.0 - step * 0.1
            )  # moved earlier each time: every old entry goes stale
            deadlines.schedule(alarm)
    assert len(deadlines._heap) <= 4 * len(alarms) + 1024
    assert _due(deadlines, 5.1) == alarms  # each fires once, at its last deadline


def test_records_of_different_keep_times_expire_each_at_its_own_time() -> None:
    recent = RecentAnswers()
    recent.remember("bye-1", OTHER_KEEP, 0.0, (b"SIP/2.0 200 OK", UDP, CALLER))
    recent.remember("invite-1", INVITE_KEEP, 1.0, (b"SIP/2.0 486 Busy", UDP, CALLER))
    # The INVITE's record, added later, expires first: 9 s, not behind the BYE's 32 s.
    assert recent.next_expiry() == 9.0
    recent.prune(9.0)
    assert recent.get("invite-1") is None
    assert recent.get("bye-1") == (b"SIP/2.0 200 OK", UDP, CALLER)
    assert recent.next_expiry() == 32.0
    recent.prune(32.0)
    assert len(recent) == 0
    assert recent.next_expiry() is None


def test_a_record_remembered_again_lives_until_its_new_time() -> None:
    recent = RecentAnswers()
    recent.remember("k", INVITE_KEEP, 0.0, (b"first", UDP, CALLER))
    recent.remember("k", INVITE_KEEP, 5.0, (b"second", TCP, CALLER))
    recent.prune(8.0)  # the first expiry must not take the second record with it
    assert recent.get("k") == (b"second", TCP, CALLER)
    recent.prune(13.0)
    assert recent.get("k") is None


def test_many_records_leave_nothing_behind_once_expired() -> None:
    recent = RecentAnswers()
    for i in range(10_000):
        recent.remember(f"k{i}", INVITE_KEEP, i / 1000, (b"x", UDP, CALLER))
    recent.prune(INVITE_KEEP + 5.0)
    assert len(recent) == 4_999
    assert recent.next_expiry() == INVITE_KEEP + 5.001
    recent.prune(100.0)
    assert (len(recent), recent.next_expiry()) == (0, None)


def test_records_are_left_alone_by_the_cycle_collector() -> None:
    # A full collection visits every tracked object: the 15,000 records of 8 s at 1,880 calls/s,
    # tracked for life, made each one several milliseconds longer.
    recent = RecentAnswers()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5_000):
        address = ("127.0.0.1", 10_000 + i)  # a tuple made per message, as a source is
        recent.remember(f"k{i}", INVITE_KEEP, i / 1000, (f"SIP/2.0 200 {i}".encode(), UDP, address))
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert recent.get("k4999") == (b"SIP/2.0 200 4999", UDP, ("127.0.0.1", 14_999))
