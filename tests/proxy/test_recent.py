"""The records that answer retransmitted requests after their transaction has finished."""

from __future__ import annotations

from sipdispatch.proxy.core.deadlines import RecentAnswers

CALLER = ("127.0.0.1", 5070)
INVITE_KEEP = 8.0  # 2 x T2
OTHER_KEEP = 32.0  # 64 x T1


def test_records_of_different_keep_times_expire_each_at_its_own_time() -> None:
    recent = RecentAnswers()
    recent.remember("bye-1", OTHER_KEEP, 0.0, (b"SIP/2.0 200 OK", "udp", CALLER))
    recent.remember("invite-1", INVITE_KEEP, 1.0, (b"SIP/2.0 486 Busy", "udp", CALLER))
    # The INVITE's record, added later, expires first: 9 s, not behind the BYE's 32 s.
    assert recent.next_expiry() == 9.0
    recent.prune(9.0)
    assert recent.get("invite-1") is None
    assert recent.get("bye-1") == (32.0, b"SIP/2.0 200 OK", "udp", CALLER)
    assert recent.next_expiry() == 32.0
    recent.prune(32.0)
    assert len(recent) == 0
    assert recent.next_expiry() is None


def test_a_record_remembered_again_lives_until_its_new_time() -> None:
    recent = RecentAnswers()
    recent.remember("k", INVITE_KEEP, 0.0, (b"first", "udp", CALLER))
    recent.remember("k", INVITE_KEEP, 5.0, (b"second", "tcp", CALLER))
    recent.prune(8.0)  # the first expiry must not take the second record with it
    assert recent.get("k") == (13.0, b"second", "tcp", CALLER)
    recent.prune(13.0)
    assert recent.get("k") is None


def test_many_records_leave_nothing_behind_once_expired() -> None:
    recent = RecentAnswers()
    for i in range(10_000):
        recent.remember(f"k{i}", INVITE_KEEP, i / 1000, (b"x", "udp", CALLER))
    recent.prune(INVITE_KEEP + 5.0)
    assert len(recent) == 4_999
    assert recent.next_expiry() == INVITE_KEEP + 5.001
    recent.prune(100.0)
    assert (len(recent), recent.next_expiry()) == (0, None)
