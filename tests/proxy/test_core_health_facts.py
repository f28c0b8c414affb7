"""What the core tells the health owner, and what it refuses to hear: probe replies only from
the probed destination, branch ends flagged as replies or not, cancelled or not; a CANCEL never
fails over."""

from __future__ import annotations

import re

import pytest
from coreharness import (
    CALLER,
    GW1,
    GW2,
    CoreDriver,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core import Hop, Send
from sipdispatch.proxy.events import BranchFailed, ProbeCompleted, ProbeReplyRejected
from sipdispatch.proxy.prober import classify
from sipdispatch.proxy.settings import ProbeSettings
from sipdispatch.sip.values import parse_via

FOUR_AND_FIVE = frozenset({408, *range(400, 600)})


def probe_branch_and_call_id(sends: list[Send]) -> tuple[str, str]:
    options = request_of(sends[0])
    branch = parse_via(options.headers.first_value("via") or "").branch or ""
    return branch, options.call_id


# --- probes that cannot be forged -------------------------------------------------------


def test_probe_branches_and_call_ids_are_random_not_counted() -> None:
    proxy, _ = make_proxy()
    seen = [
        probe_branch_and_call_id(proxy.probe(GW1, "sip:lb@x", 2.0, float(i))[1]) for i in range(50)
    ]
    branches = [branch for branch, _ in seen]
    call_ids = [call_id for _, call_id in seen]
    assert len(set(branches)) == len(set(call_ids)) == 50
    for branch in branches:
        # 64 random bits after the prefix: nothing to learn from the probes seen before
        assert re.fullmatch(r"z9hG4bKsdP[0-9a-f]{16}", branch), branch


def test_a_probe_reply_from_another_address_is_dropped_and_reported() -> None:
    proxy, _ = make_proxy()
    probe_id, sends = proxy.probe(GW1, "sip:lb@x", 2.0, 0.0)
    answer = reply(request_of(sends[0]), 200)
    forger = ("127.0.0.9", 5060)
    assert proxy.receive(answer, forger, "udp", 0.1) == []
    assert proxy.receive(answer, (GW1.host, 5999), "udp", 0.1) == []  # right host, wrong port
    assert proxy.receive(answer, address_of(GW1), "tcp", 0.1) == []  # wrong transport
    assert proxy.events == [
        ProbeReplyRejected(GW1.key, forger, "udp"),
        ProbeReplyRejected(GW1.key, (GW1.host, 5999), "udp"),
        ProbeReplyRejected(GW1.key, address_of(GW1), "tcp"),
    ]
    assert proxy.probe_count == 1  # still waiting for the destination itself
    proxy.receive(answer, address_of(GW1), "udp", 0.2)
    assert proxy.events[-1] == ProbeCompleted(probe_id, GW1.key, 200, 0.2, None)


def test_a_forged_reply_cannot_save_a_dead_destination_from_its_timeout() -> None:
    proxy, _ = make_proxy()
    probe_id, sends = proxy.probe(GW2, "sip:lb@x", 1.0, 0.0)
    proxy.receive(reply(request_of(sends[0]), 200), ("127.0.0.9", 5060), "udp", 0.1)
    while (deadline := proxy.next_deadline()) is not None:
        proxy.on_timer(deadline)
    assert proxy.events[-1] == ProbeCompleted(probe_id, GW2.key, 408, None, None)


def test_a_destination_named_by_a_host_name_is_checked_by_port_and_transport() -> None:
    # The socket layer resolves the name when sending: the address it chose is not known here.
    named = Hop("gw.example", 5080, "udp", DestinationKey.parse(1, "sip:gw.example:5080"))
    proxy, _ = make_proxy()
    probe_id, sends = proxy.probe(named, "sip:lb@x", 2.0, 0.0)
    answer = reply(request_of(sends[0]), 200)
    proxy.receive(answer, ("192.0.2.7", 5060), "udp", 0.1)
    assert isinstance(proxy.events[-1], ProbeReplyRejected)
    proxy.receive(answer, ("192.0.2.7", 5080), "udp", 0.1)
    assert proxy.events[-1] == ProbeCompleted(probe_id, named.key, 200, 0.1, None)


@pytest.mark.parametrize(("asked", "granted"), [(120.0, 120.0), (1e9, 300.0), (301.0, 300.0)])
def test_retry_after_is_capped(asked: float, granted: float) -> None:
    settings = ProbeSettings.from_spec(ProbingSpec())
    result = classify(503, 0.01, asked, settings)
    assert result.retry_after == granted


def test_the_retry_after_cap_is_a_setting() -> None:
    settings = ProbeSettings.from_spec(ProbingSpec.model_validate({"maxRetryAfter": 10}))
    assert classify(503, 0.01, 60.0, settings).retry_after == 10.0


# --- how a branch ended -----------------------------------------------------------------


def failed(proxy: CoreDriver) -> list[BranchFailed]:
    return [e for e in proxy.events if isinstance(e, BranchFailed)]


def test_a_reply_and_a_timeout_are_told_apart() -> None:
    proxy, _ = make_proxy(failover_codes=FOUR_AND_FIVE)
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(reply(forwarded, 503), address_of(GW1), "udp", 0.1)  # fails over to GW2
    while (deadline := proxy.next_deadline()) is not None and deadline < 100:
        proxy.on_timer(deadline)  # GW2 never answers
    assert [(e.destination, e.status, e.replied, e.cancelled) for e in failed(proxy)] == [
        (GW1.key, 503, True, False),
        (GW2.key, 408, False, False),
    ]


def cancel_of(raw: bytes) -> bytes:
    return raw.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")


def test_a_cancelled_call_never_fails_over_even_on_4xx_failover() -> None:
    proxy, _ = make_proxy(failover_codes=FOUR_AND_FIVE)
    raw = invite()
    sends = proxy.receive(raw, CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(reply(forwarded, 180), address_of(GW1), "udp", 0.1)
    proxy.receive(cancel_of(raw), CALLER, "udp", 0.2)
    sends = proxy.receive(reply(forwarded, 487), address_of(GW1), "udp", 0.3)
    assert response_of(sent_to(sends, CALLER)[0]).status == 487
    assert not sent_to(sends, address_of(GW2))
    assert [(e.status, e.replied, e.cancelled) for e in failed(proxy)] == [(487, True, True)]


def test_a_call_cancelled_before_any_provisional_does_not_fail_over_on_a_503() -> None:
    proxy, _ = make_proxy(failover_codes=FOUR_AND_FIVE)
    raw = invite()
    sends = proxy.receive(raw, CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(cancel_of(raw), CALLER, "udp", 0.05)  # the CANCEL waits for a provisional
    sends = proxy.receive(reply(forwarded, 503), address_of(GW1), "udp", 0.1)
    assert not sent_to(sends, address_of(GW2))
    assert response_of(sent_to(sends, CALLER)[0]).status == 503
    assert [(e.status, e.replied, e.cancelled) for e in failed(proxy)] == [(503, True, True)]


def test_a_cancelled_branch_that_never_answers_is_flagged_cancelled() -> None:
    proxy, _ = make_proxy(failover_codes=FOUR_AND_FIVE)
    raw = invite()
    sends = proxy.receive(raw, CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(reply(forwarded, 180), address_of(GW1), "udp", 0.1)
    proxy.receive(cancel_of(raw), CALLER, "udp", 0.2)
    while (deadline := proxy.next_deadline()) is not None and deadline < 100:
        sends = proxy.on_timer(deadline)  # no 487 ever comes
        assert not sent_to(sends, address_of(GW2))
    assert [(e.status, e.replied, e.cancelled) for e in failed(proxy)] == [(408, False, True)]
