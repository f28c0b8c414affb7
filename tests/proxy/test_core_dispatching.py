"""The core's dispatcher features: OPTIONS probes, parallel forking, transport failures,
dialog accounting."""

from __future__ import annotations

from coreharness import (
    CALLER,
    GW1,
    GW2,
    PROXY,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.proxy.core import Send
from sipdispatch.proxy.events import DialogEnded, ProbeCompleted
from sipdispatch.sip.values import parse_via


def test_probe_sends_options_to_the_destination_and_reports_status_and_rtt() -> None:
    proxy, _ = make_proxy()
    probe_id, sends = proxy.probe(GW1, "sip:lb@example.net", 2.0, 10.0)
    options = request_of(sends[0])
    assert (options.method, options.uri) == ("OPTIONS", "sip:127.0.0.2:5060")
    assert parse_via(options.headers.first_value("via") or "").host == PROXY[0]
    assert "sip:lb@example.net" in (options.headers.get("from") or "")
    assert proxy.receive(reply(options, 200), (GW1.host, GW1.port), "udp", 10.25) == []
    assert proxy.events == [ProbeCompleted(probe_id, GW1.key, 200, 0.25, None)]
    assert proxy.probe_count == 0


def test_probe_without_answer_times_out_as_408_at_its_own_timeout() -> None:
    proxy, _ = make_proxy()
    probe_id, _ = proxy.probe(GW2, "sip:lb@example.net", 1.0, 0.0)
    retransmits: list[Send] = []
    while (deadline := proxy.next_deadline()) is not None:
        retransmits += proxy.on_timer(deadline)
    assert [s.address for s in retransmits] == [(GW2.host, GW2.port)]  # Timer E at T1=0.5
    assert proxy.events == [ProbeCompleted(probe_id, GW2.key, 408, None, None)]


def test_probe_503_carries_retry_after() -> None:
    proxy, _ = make_proxy()
    probe_id, sends = proxy.probe(GW1, "sip:lb@example.net", 2.0, 0.0)
    answer = reply(request_of(sends[0]), 503).replace(
        b"Content-Length: 0", b"Retry-After: 120 (maintenance)\r\nContent-Length: 0"
    )
    proxy.receive(answer, (GW1.host, GW1.port), "udp", 0.1)
    assert proxy.events[0] == ProbeCompleted(probe_id, GW1.key, 503, 0.1, 120.0)


def test_parallel_forking_first_2xx_wins_and_the_others_are_cancelled() -> None:
    proxy, selector = make_proxy()
    selector.parallel = True
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    to_gw1, to_gw2 = (
        request_of(sent_to(sends, address_of(GW1))[0]),
        request_of(sent_to(sends, address_of(GW2))[0]),
    )
    proxy.receive(reply(to_gw1, 180), (GW1.host, GW1.port), "udp", 0.1)
    proxy.receive(reply(to_gw2, 180, to_tag="gw2"), (GW2.host, GW2.port), "udp", 0.1)
    sends = proxy.receive(reply(to_gw2, 200, to_tag="gw2"), (GW2.host, GW2.port), "udp", 0.2)
    assert response_of(next(s for s in sends if s.address == CALLER)).status == 200
    cancel = request_of(sent_to(sends, address_of(GW1))[0])
    assert cancel.method == "CANCEL"
    assert cancel.headers.first_value("via") == to_gw1.headers.first_value("via")
    late = proxy.receive(reply(to_gw1, 487), (GW1.host, GW1.port), "udp", 0.3)
    assert [request_of(s).method for s in late] == ["ACK"]  # the 487 is absorbed, not relayed


def test_parallel_forking_answers_the_best_failure_when_all_fail() -> None:
    proxy, selector = make_proxy()
    selector.parallel = True
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    proxy.receive(
        reply(request_of(sent_to(sends, address_of(GW1))[0]), 503), (GW1.host, GW1.port), "udp", 0.1
    )
    done = proxy.receive(
        reply(request_of(sent_to(sends, address_of(GW2))[0]), 486, to_tag="gw2"),
        (GW2.host, GW2.port),
        "udp",
        0.2,
    )
    finals = [response_of(s).status for s in done if s.address == CALLER]
    assert finals == [486]


def test_transport_failure_fails_over_at_once() -> None:
    proxy, _ = make_proxy()
    proxy.receive(invite(), CALLER, "udp", 0.0)
    sends = proxy.transport_failed((GW1.host, GW1.port), "udp", 0.01)
    assert [request_of(s).method for s in sent_to(sends, address_of(GW2))] == ["INVITE"]
    assert (GW1.key, 503) in proxy.failures()


def test_bye_through_our_route_reports_the_dialog_ended() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(call_id="dlg-1"), CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    ok = response_of(proxy.receive(reply(forwarded, 200), (GW1.host, GW1.port), "udp", 0.1)[0])
    bye = (
        "BYE sip:gw@127.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-bye9\r\n"
        f"Route: {ok.headers.get('record-route')}\r\nFrom: {ok.headers.get('from')}\r\n"
        f"To: {ok.headers.get('to')}\r\nCall-ID: dlg-1\r\nCSeq: 2 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    proxy.events.clear()
    proxy.receive(bye, CALLER, "udp", 1.0)
    assert proxy.events == [DialogEnded("dlg-1")]
