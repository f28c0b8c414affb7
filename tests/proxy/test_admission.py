"""Admission control in the core: per-source rates (new and in-dialog requests apart), the
optional ban, a table bounded whatever the number of sources, and the cap on live transactions."""

from __future__ import annotations

import pytest
from coreharness import (
    CALLER,
    GW1,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.proxy.core import Send
from sipdispatch.proxy.core.admission import AdmissionSettings, SourceLimiter

OTHER = ("192.0.2.77", 5070)


def _forwarded(sends: list[Send]) -> bool:
    """Whether the request went on to a gateway (not only answered back)."""
    return any(s.address not in (CALLER, OTHER) for s in sends)


def test_a_source_gets_its_rate_per_second_and_no_more() -> None:
    limiter = SourceLimiter(AdmissionSettings(source_rate=3, dialog_rate=0))
    answers = [limiter.admit("192.0.2.1", False, 10.0 + i / 100) for i in range(5)]
    assert answers == ["", "", "", "source-rate", "source-rate"]
    assert limiter.admit("192.0.2.2", False, 10.1) == ""  # another source has its own count
    assert limiter.admit("192.0.2.1", False, 11.05) == ""  # the next window starts afresh
    assert limiter.counts["source-rate"] == 2


def test_in_dialog_requests_count_apart_against_their_own_rate() -> None:
    limiter = SourceLimiter(AdmissionSettings(source_rate=1, dialog_rate=3))
    assert limiter.admit("192.0.2.1", False, 0.0) == ""
    assert limiter.admit("192.0.2.1", False, 0.0) == "source-rate"
    assert [limiter.admit("192.0.2.1", True, 0.0) for _ in range(4)] == ["", "", "", "dialog-rate"]


def test_a_ban_refuses_every_request_of_the_source_for_its_time() -> None:
    limiter = SourceLimiter(AdmissionSettings(source_rate=1, dialog_rate=100, ban=5.0))
    assert limiter.admit("192.0.2.1", False, 0.0) == ""
    assert limiter.admit("192.0.2.1", False, 0.1) == "source-rate"
    assert limiter.admit("192.0.2.1", True, 3.0) == "banned"  # in-dialog ones too
    assert limiter.admit("192.0.2.1", False, 5.2) == ""
    assert limiter.counts == {"source-rate": 1, "dialog-rate": 0, "banned": 1}


def test_spoofed_sources_cannot_grow_the_table_past_its_bound() -> None:
    limiter = SourceLimiter(AdmissionSettings(source_rate=2, max_sources=100, ban=60.0))
    refused = [limiter.admit(f"10.0.{i // 256}.{i % 256}", False, 0.5) for i in range(10_000)]
    assert limiter.sources <= 101  # the bound, and the one count the rest share
    # The sources the window had no room for share one count: two of them pass, not 9,900.
    assert refused.count("") == 100 + 2
    assert limiter.banned == 0  # a shared count bans nobody
    limiter.admit("192.0.2.1", False, 1.6)
    assert limiter.sources == 1  # each window starts empty


def _in_dialog_request(n: int) -> bytes:
    """A BYE carrying a Route signed by someone else: in-dialog by its bytes, 403 by its
    signature."""
    route = "Route: <sip:10.0.0.1;lr;ftag=a;did=x;sig=forged>\r\n"
    return (
        invite(extra=route)
        .replace(b"INVITE sip:", b"BYE sip:")
        .replace(b"CSeq: 1 INVITE", f"CSeq: {n} BYE".encode())
        .replace(b"To: <sip:service@lb.example>", b"To: <sip:service@lb.example>;tag=b")
    )


@pytest.mark.parametrize(
    ("transport", "reply_udp", "answered"),
    [("udp", False, False), ("udp", True, True), ("tcp", False, True)],
)
def test_a_request_over_the_rate_is_dropped_over_udp_and_503_otherwise(
    transport: str, reply_udp: bool, answered: bool
) -> None:
    admission = AdmissionSettings(source_rate=2, reply_udp=reply_udp, retry_after=7)
    proxy, _ = make_proxy(admission=admission)
    for _ in range(2):
        assert _forwarded(proxy.receive(invite(), CALLER, transport, 0.0))
    over = proxy.receive(invite(), CALLER, transport, 0.5)
    if not answered:
        assert over == []
    else:
        [answer] = over
        response = response_of(answer)
        assert (response.status, response.headers.get("retry-after")) == (503, "7")
    assert proxy.core.admission_counts()["source-rate"] == 1
    assert _forwarded(proxy.receive(invite(), OTHER, transport, 0.5))  # another source: its own


def test_in_dialog_requests_and_responses_are_not_held_to_the_new_request_rate() -> None:
    proxy, _ = make_proxy(admission=AdmissionSettings(source_rate=1, dialog_rate=50))
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    assert proxy.receive(invite(), CALLER, "udp", 0.1) == []  # the second new one: over
    # the gateway's answers pass, and so do in-dialog requests (each answered 403 here)
    answers = proxy.receive(reply(forwarded, 200), address_of(GW1), "udp", 0.2)
    assert sent_to(answers, CALLER)
    for n in range(10):
        assert proxy.receive(_in_dialog_request(n + 2), CALLER, "udp", 0.3)
    assert proxy.core.admission_counts() == {
        "source-rate": 1,
        "dialog-rate": 0,
        "banned": 0,
        "transactions": 0,
    }


def test_new_requests_beyond_the_transaction_cap_get_503_with_retry_after() -> None:
    proxy, _ = make_proxy(admission=AdmissionSettings(max_transactions=2, retry_after=9))
    for _ in range(2):
        assert _forwarded(proxy.receive(invite(), CALLER, "udp", 0.0))
    assert proxy.core.transaction_count == 2
    [answer] = proxy.receive(invite(), CALLER, "udp", 0.1)
    response = response_of(answer)
    assert (response.status, response.headers.get("retry-after")) == (503, "9")
    assert proxy.core.transaction_count == 2
    assert proxy.core.admission_counts()["transactions"] == 1
