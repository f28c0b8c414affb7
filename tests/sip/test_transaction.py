"""Transaction state machines, with time moved by hand."""

from __future__ import annotations

import itertools

import pytest

from sipdispatch.sip.errors import LocalProtocolError
from sipdispatch.sip.transaction import (
    Action,
    ClientState,
    ClientTransaction,
    ServerState,
    ServerTransaction,
    Timers,
)

T = Timers(t1=0.5, t2=4.0, t4=5.0)


def _run(txn: ClientTransaction | ServerTransaction, until: float) -> list[tuple[float, Action]]:
    """Fire every timer up to ``until``; return (time, action) pairs."""
    fired: list[tuple[float, Action]] = []
    while txn.deadline is not None and txn.deadline <= until:
        at = txn.deadline
        fired += [(at, a) for a in txn.on_timer(at)]
    return fired


def test_invite_client_retransmits_with_doubling_then_times_out_at_64_t1() -> None:
    txn = ClientTransaction(invite=True, reliable=False, now=0.0, timers=T)
    fired = _run(txn, 100.0)
    retransmits = [at for at, a in fired if a is Action.RETRANSMIT]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert fired[-2:] == [(32.0, Action.TIMEOUT), (32.0, Action.TERMINATED)]
    assert txn.state is ClientState.TERMINATED


def test_invite_client_over_tcp_never_retransmits() -> None:
    txn = ClientTransaction(invite=True, reliable=True, now=0.0, timers=T)
    assert [a for _, a in _run(txn, 100.0)] == [Action.TIMEOUT, Action.TERMINATED]


def test_provisional_stops_invite_retransmissions() -> None:
    txn = ClientTransaction(invite=True, reliable=False, now=0.0, timers=T)
    assert txn.receive_response(100, 0.1) == []
    assert txn.state is ClientState.PROCEEDING
    assert _run(txn, 1000.0) == []


def test_non_2xx_final_asks_for_ack_and_absorbs_retransmissions() -> None:
    txn = ClientTransaction(invite=True, reliable=False, now=0.0, timers=T)
    txn.receive_response(180, 0.1)
    assert txn.receive_response(503, 0.2) == [Action.SEND_ACK]
    assert txn.state is ClientState.COMPLETED
    # A retransmitted 503 is ACKed again; the transaction lives for Timer D (32 s).
    assert txn.receive_response(503, 1.0) == [Action.SEND_ACK]
    assert _run(txn, 32.1) == []
    assert _run(txn, 33.0) == [(32.2, Action.TERMINATED)]
    assert txn.state is ClientState.TERMINATED


def test_2xx_moves_to_accepted_and_keeps_absorbing_2xx() -> None:
    txn = ClientTransaction(invite=True, reliable=False, now=0.0, timers=T)
    txn.receive_response(200, 0.3)
    assert txn.state is ClientState.ACCEPTED
    assert txn.receive_response(200, 0.9) == []
    assert txn.receive_response(180, 1.0) == []  # stray provisional after the final: ignored
    assert _run(txn, 100.0) == [(32.3, Action.TERMINATED)]


def test_non_invite_client_caps_retransmissions_at_t2() -> None:
    txn = ClientTransaction(invite=False, reliable=False, now=0.0, timers=T)
    fired = _run(txn, 40.0)
    gaps = [at for at, a in fired if a is Action.RETRANSMIT]
    assert gaps[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert (32.0, Action.TIMEOUT) in fired


def test_non_invite_client_completes_then_waits_timer_k() -> None:
    txn = ClientTransaction(invite=False, reliable=False, now=0.0, timers=T)
    assert txn.receive_response(200, 0.2) == []
    assert txn.state is ClientState.COMPLETED
    assert _run(txn, 10.0) == [(5.2, Action.TERMINATED)]


def test_invite_server_retransmits_final_until_ack() -> None:
    txn = ServerTransaction(invite=True, reliable=False, timers=T)
    txn.send_response(100, 0.0)
    assert txn.receive_request() == [Action.RETRANSMIT]  # INVITE retransmission: resend 100
    txn.send_response(486, 1.0)
    assert txn.state is ServerState.COMPLETED
    assert [at for at, a in _run(txn, 3.0)] == [1.5, 2.5]  # Timer G: T1, then 2*T1
    txn.receive_ack(3.0)
    assert txn.state is ServerState.CONFIRMED
    assert _run(txn, 10.0) == [(8.0, Action.TERMINATED)]  # Timer I = T4


def test_invite_server_gives_up_without_ack() -> None:
    txn = ServerTransaction(invite=True, reliable=False, timers=T)
    txn.send_response(500, 0.0)
    fired = _run(txn, 100.0)
    assert fired[-2:] == [(32.0, Action.TIMEOUT), (32.0, Action.TERMINATED)]
    assert max(b - a for (a, _), (b, _) in itertools.pairwise(fired)) <= T.t2


def test_server_refuses_illegal_moves() -> None:
    txn = ServerTransaction(invite=False, reliable=True, timers=T)
    txn.send_response(200, 0.0)
    with pytest.raises(LocalProtocolError):
        txn.send_response(180, 0.1)
    assert txn.receive_request() == [Action.RETRANSMIT]
