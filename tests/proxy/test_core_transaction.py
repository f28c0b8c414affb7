"""The proxy transaction's table, seen from the wire: what each response does, and the events
each call returns."""

from __future__ import annotations

import dataclasses

from coreharness import (
    CALLER,
    GW1,
    GW2,
    PROXY,
    RoundRobin,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.proxy.core import CoreSettings, Proxy, Signer
from sipdispatch.proxy.events import BranchAnswered, BranchStarted
from sipdispatch.sip.values import parse_via


def test_each_call_returns_the_events_it_caused_and_nothing_older() -> None:
    proxy = Proxy(
        CoreSettings(local={"udp": PROXY}, advertise=PROXY),
        RoundRobin([GW1]),
        Signer(b"s" * 32),
    )
    sent = proxy.receive(invite(call_id="ev-1"), CALLER, "udp", 0.0)
    assert sent.events == [BranchStarted(GW1.key, "INVITE", "ev-1")]
    forwarded = request_of(sent_to(sent.sends, address_of(GW1))[0])
    ringing = proxy.receive(reply(forwarded, 180), address_of(GW1), "udp", 0.1)
    assert ringing.events == []
    answered = proxy.receive(reply(forwarded, 200), address_of(GW1), "udp", 0.5)
    assert answered.events == [BranchAnswered(GW1.key, 0.5, "INVITE", "ev-1")]
    assert proxy.on_timer(0.6).events == []


def test_a_provisional_after_the_branch_failed_is_not_relayed() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    to_gw1 = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(reply(to_gw1, 503), address_of(GW1), "udp", 0.1)  # on to GW2, caller still waits
    late = proxy.receive(reply(to_gw1, 183), address_of(GW1), "udp", 0.2)
    assert late == []  # the finished client transaction absorbs it


def test_a_retransmitted_failure_gets_its_ack_again_and_nothing_else() -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    to_gw1 = request_of(sent_to(sends, address_of(GW1))[0])
    first = proxy.receive(reply(to_gw1, 503), address_of(GW1), "udp", 0.1)
    again = proxy.receive(reply(to_gw1, 503), address_of(GW1), "udp", 0.2)
    assert [request_of(s).method for s in sent_to(first, address_of(GW2))] == ["INVITE"]
    assert [(s.address, request_of(s).method) for s in again] == [(address_of(GW1), "ACK")]
    assert [e for e in proxy.last if not isinstance(e, BranchStarted)] == []


def test_a_second_forks_2xx_reaches_the_caller_as_well() -> None:
    proxy, selector = make_proxy()
    selector.parallel = True
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    to_gw1, to_gw2 = (
        request_of(sent_to(sends, address_of(GW1))[0]),
        request_of(sent_to(sends, address_of(GW2))[0]),
    )
    first = proxy.receive(reply(to_gw1, 200), address_of(GW1), "udp", 0.1)
    second = proxy.receive(reply(to_gw2, 200, to_tag="gw2"), address_of(GW2), "udp", 0.1)
    assert [response_of(s).status for s in sent_to(first, CALLER)] == [200]
    # RFC 3261 16.7 step 5: every 2xx goes upstream, the caller ends the extra dialog.
    assert [(s.address, response_of(s).status) for s in second] == [(CALLER, 200)]
    assert "tag=gw2" in (response_of(second[0]).headers.get("to") or "")
    assert proxy.transaction_count == 0


def test_new_settings_apply_from_the_next_request() -> None:
    proxy, _ = make_proxy()
    core = proxy.core
    core.settings = dataclasses.replace(core.settings, failover_codes=frozenset())
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    to_gw1 = request_of(sent_to(sends, address_of(GW1))[0])
    done = proxy.receive(reply(to_gw1, 503), address_of(GW1), "udp", 0.1)
    assert [response_of(s).status for s in sent_to(done, CALLER)] == [503]  # no failover any more
    assert sent_to(done, address_of(GW2)) == []


def test_received_and_rport_the_caller_wrote_are_replaced_not_repeated() -> None:
    proxy, _ = make_proxy()
    data = invite().replace(b";branch=", b";rport=1;received=192.0.2.99;branch=")
    natted = ("203.0.113.5", 40000)
    sends = proxy.receive(data, natted, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    caller_via = forwarded.headers.values("via")[1]
    assert caller_via.count("received=") == 1
    assert caller_via.count("rport") == 1
    parsed = parse_via(caller_via)
    assert (parsed.params["received"], parsed.params["rport"]) == ("203.0.113.5", "40000")
    assert (parsed.host, parsed.port) == (CALLER[0], CALLER[1])
    assert (parsed.branch or "").startswith("z9hG4bK-c")
