"""Several listeners in the core: the listener a hop is sent from, the double Record-Route
of a request that changes listener (RFC 5658), and in-dialog requests routed back through
both routes, from either side."""

from __future__ import annotations

import pytest
from coreharness import RoundRobin, reply, request_of, response_of

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core import (
    CoreSettings,
    Hop,
    Listener,
    Proxy,
    Send,
    Signer,
    destination_id,
)
from sipdispatch.proxy.events import RouteRefused
from sipdispatch.sip.transaction import Timers

PUBLIC = ("203.0.113.1", 5060)
U4 = Listener("udp:10.0.0.1:5060", "udp", ("10.0.0.1", 5060), PUBLIC)
U4B = Listener("udp:10.0.0.2:5060", "udp", ("10.0.0.2", 5060), ("10.0.0.2", 5060))
T4 = Listener("tcp:10.0.0.1:5060", "tcp", ("10.0.0.1", 5060), PUBLIC)
U6 = Listener("udp:[fd00::1]:5060", "udp", ("fd00::1", 5060), ("fd00::1", 5060))
SETTINGS = CoreSettings(local={}, advertise=PUBLIC, timers=Timers(), listeners=(U4, U4B, T4, U6))

GW = Hop("192.0.2.50", 5060, "udp", DestinationKey.parse(1, "sip:192.0.2.50:5060"))
GW6 = Hop("fd00::50", 5060, "udp", DestinationKey.parse(1, "sip:[fd00::50]:5060"))
PINNED = Hop("192.0.2.51", 5060, "udp", DestinationKey.parse(1, "sip:192.0.2.51:5060"), U4B.id)
CALLER = ("192.0.2.10", 40000)
CALLER6 = ("fd00::10", 5070)


def make_core(*hops: Hop) -> Proxy:
    core = Proxy(SETTINGS, RoundRobin(hops), Signer(b"k" * 32))
    core.destinations = frozenset(destination_id(h.host, h.port, h.transport) for h in hops)
    return core


def invite(transport: str, source: tuple[str, int], call_id: str) -> bytes:
    host = f"[{source[0]}]" if ":" in source[0] else source[0]
    contact = f"sip:alice@{host}:{source[1]}" + ("" if transport == "udp" else ";transport=tcp")
    return (
        f"INVITE sip:service@{PUBLIC[0]} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {host}:{source[1]};branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@caller.example>;tag=alice\r\n"
        "To: <sip:service@lb.example>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <{contact}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def bye(
    routes: list[str],
    *,
    via: str,
    from_tag: str,
    to_tag: str,
    uri: str,
    call_id: str,
) -> bytes:
    lines = [
        f"BYE {uri} SIP/2.0",
        f"Via: {via};branch=z9hG4bK-bye-{from_tag}",
        "Max-Forwards: 70",
        f"From: <sip:x@example>;tag={from_tag}",
        f"To: <sip:y@example>;tag={to_tag}",
        f"Call-ID: {call_id}",
        "CSeq: 2 BYE",
        *(f"Route: {route}" for route in routes),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def only(sends: list[Send]) -> Send:
    requests = [s for s in sends if not s.data.startswith(b"SIP/2.0 ")]
    assert len(requests) == 1, sends
    return requests[0]


def dialog(core: Proxy, arrival: Listener, source: tuple[str, int], call_id: str) -> list[str]:
    """An INVITE from ``source`` on ``arrival``, answered 200 by the gateway: the
    Record-Route values the gateway saw, top first."""
    transport = arrival.transport
    sent = only(core.receive(invite(transport, source, call_id), source, arrival, 0.0).sends)
    forwarded = request_of(sent)
    answer = reply(forwarded, 200, contact="sip:gw@192.0.2.50:5060")
    back = core.receive(answer, sent.address, sent.listener or U4, 0.1).sends
    assert [response_of(s).status for s in back] == [200]
    assert back[0].listener is arrival  # the answer leaves from where the INVITE came in
    assert back[0].address == source
    return forwarded.headers.values("record-route")


# ---------------------------------------------------------------------- choosing a listener


def test_a_socket_pins_the_listener_a_hop_is_sent_from() -> None:
    assert SETTINGS.outbound(PINNED) is U4B
    assert SETTINGS.outbound(PINNED, T4) is U4B


def test_without_a_socket_the_hop_takes_its_transport_and_family_the_arrival_first() -> None:
    assert SETTINGS.outbound(GW) is U4  # the first of udp / IPv4
    assert SETTINGS.outbound(GW, U4B) is U4B  # the one the request came in on
    assert SETTINGS.outbound(GW, T4) is U4  # another transport: the first that fits
    assert SETTINGS.outbound(GW, U6) is U4  # another family: likewise
    assert SETTINGS.outbound(GW6, U4) is U6
    tcp6 = Hop("fd00::50", 5060, "tcp", DestinationKey.parse(1, "sip:[fd00::50];transport=tcp"))
    assert SETTINGS.outbound(tcp6) is None  # no TCP listener on IPv6: it cannot be sent


def test_a_hop_whose_socket_is_no_listener_is_skipped_for_the_next() -> None:
    lost = Hop(
        "192.0.2.52", 5060, "udp", DestinationKey.parse(1, "sip:192.0.2.52"), "udp:1.1.1.1:5060"
    )
    core = make_core(lost, GW)
    sent = only(core.receive(invite("udp", CALLER, "c-lost"), CALLER, U4, 0.0).sends)
    assert sent.address == (GW.host, GW.port)


def test_every_listener_and_advertised_address_is_local() -> None:
    for address in (PUBLIC, U4.local, U4B.local, U6.local):
        assert SETTINGS.sockets.is_own(address)
    assert not SETTINGS.sockets.is_own(("10.0.0.3", 5060))


# ---------------------------------------------------------------------- Record-Route shape


def test_same_listener_in_and_out_records_one_route() -> None:
    routes = dialog(make_core(GW), U4, CALLER, "same")
    assert len(routes) == 1
    assert routes[0].startswith(f"<sip:{PUBLIC[0]}:{PUBLIC[1]};lr;")


def test_a_tcp_caller_to_a_udp_gateway_records_two_routes_the_gateways_on_top() -> None:
    routes = dialog(make_core(GW), T4, CALLER, "bridged")
    assert len(routes) == 2
    top, second = routes
    assert top.startswith(f"<sip:{PUBLIC[0]}:{PUBLIC[1]};lr;")  # UDP: no transport parameter
    assert second.startswith(f"<sip:{PUBLIC[0]}:{PUBLIC[1]};transport=tcp;lr;")
    # the same signed dialog fields in both
    assert top.partition(";lr;")[2] == second.partition(";lr;")[2]
    assert ";sig=" in top


def test_the_request_leaves_from_the_outbound_listener_with_its_via() -> None:
    core = make_core(PINNED)
    sent = only(core.receive(invite("udp", CALLER, "pin"), CALLER, U4, 0.0).sends)
    assert sent.listener is U4B
    via = request_of(sent).headers.first_value("via") or ""
    assert via.startswith("SIP/2.0/UDP 10.0.0.2:5060;")
    routes = request_of(sent).headers.values("record-route")
    assert [r.partition(";")[0] for r in routes] == ["<sip:10.0.0.2:5060", "<sip:203.0.113.1:5060"]


def test_an_ipv6_caller_to_an_ipv4_gateway_is_bridged_between_families() -> None:
    routes = dialog(make_core(GW), U6, CALLER6, "dual")
    assert [r.partition(";")[0] for r in routes] == ["<sip:203.0.113.1:5060", "<sip:[fd00::1]:5060"]


# ---------------------------------------------------------------------- in-dialog requests


def test_the_gateways_bye_pops_both_routes_and_reaches_the_tcp_caller_over_tcp() -> None:
    core = make_core(GW)
    routes = dialog(core, T4, CALLER, "gw-bye")
    data = bye(
        routes,  # the gateway's route set: the Record-Routes in order
        via="SIP/2.0/UDP 192.0.2.50:5060",
        from_tag="gw1",
        to_tag="alice",
        uri=f"sip:alice@{CALLER[0]}:{CALLER[1]};transport=tcp",
        call_id="gw-bye",
    )
    sent = only(core.receive(data, (GW.host, GW.port), U4, 1.0).sends)
    assert (sent.transport, sent.address, sent.listener) == ("tcp", CALLER, T4)
    forwarded = request_of(sent)
    assert forwarded.headers.values("route") == []
    assert (forwarded.headers.first_value("via") or "").startswith("SIP/2.0/TCP 10.0.0.1:5060;")


def test_the_callers_bye_pops_both_routes_and_reaches_the_gateway_over_udp() -> None:
    core = make_core(GW)
    routes = dialog(core, T4, CALLER, "caller-bye")
    data = bye(
        list(reversed(routes)),  # the caller's route set: the Record-Routes reversed
        via=f"SIP/2.0/TCP {CALLER[0]}:{CALLER[1]}",
        from_tag="alice",
        to_tag="gw1",
        uri="sip:gw@192.0.2.50:5060",
        call_id="caller-bye",
    )
    sent = only(core.receive(data, CALLER, T4, 1.0).sends)
    assert (sent.transport, sent.address, sent.listener) == ("udp", (GW.host, GW.port), U4)
    assert request_of(sent).headers.values("route") == []


def test_a_pinned_gateway_gets_its_in_dialog_requests_from_its_socket() -> None:
    core = make_core(PINNED)
    core.sockets = {destination_id(PINNED.host, PINNED.port, "udp"): U4B.id}
    sent = only(core.receive(invite("udp", CALLER, "pin-bye"), CALLER, U4, 0.0).sends)
    routes = request_of(sent).headers.values("record-route")
    data = bye(
        list(reversed(routes)),
        via=f"SIP/2.0/UDP {CALLER[0]}:{CALLER[1]}",
        from_tag="alice",
        to_tag="gw1",
        uri="sip:gw@192.0.2.51:5060",
        call_id="pin-bye",
    )
    out = only(core.receive(data, CALLER, U4, 1.0).sends)
    assert (out.address, out.listener) == ((PINNED.host, PINNED.port), U4B)


def test_a_route_of_someone_else_below_ours_is_kept() -> None:
    core = make_core(GW)
    (route,) = dialog(core, U4, CALLER, "keep")
    data = bye(
        [route, "<sip:edge.example.com;lr>"],
        via=f"SIP/2.0/UDP {CALLER[0]}:{CALLER[1]}",
        from_tag="alice",
        to_tag="gw1",
        uri="sip:gw@192.0.2.50:5060",
        call_id="keep",
    )
    sent = only(core.receive(data, CALLER, U4, 1.0).sends)
    assert request_of(sent).headers.values("route") == ["<sip:edge.example.com;lr>"]


@pytest.mark.parametrize(
    ("source", "arrival"),
    [
        (("192.0.2.99", 5060), U4),  # another host
        (("192.0.2.50", 40001), T4),  # the gateway's host, but not its transport
    ],
)
def test_requests_towards_the_caller_come_only_from_the_gateway(
    source: tuple[str, int], arrival: Listener
) -> None:
    core = make_core(GW)
    routes = dialog(core, T4, CALLER, "direction")
    data = bye(
        routes,
        via=f"SIP/2.0/{arrival.transport.upper()} {source[0]}:{source[1]}",
        from_tag="gw1",
        to_tag="alice",
        uri=f"sip:alice@{CALLER[0]}:{CALLER[1]};transport=tcp",
        call_id="direction",
    )
    out = core.receive(data, source, arrival, 1.0)
    assert [response_of(s).status for s in out.sends] == [403]
    assert out.sends[0].listener is arrival
    assert RouteRefused("direction") in out.events
