"""A stream caller's flow in the signed Record-Route: the gateway's requests go back over the
caller's connection while it lives (else where they say), a tampered flow is refused, routes
without one verify as before; and RFC 5923 aliases offered by a request's top Via."""

from __future__ import annotations

from coreharness import (
    GW1,
    CoreDriver,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.proxy.events import AliasOffered, RouteRefused
from sipdispatch.sip.message import Request

#: a caller behind NAT: private address in Via and Contact, packets from another
CONNECTION = ("198.51.100.7", 40123)
CONTACT = "sip:alice@10.1.1.5:5077;transport=tcp"


def _invite(n: int, *, via: str = "SIP/2.0/TCP 10.1.1.5:5077;branch=z9hG4bK-f{n}") -> bytes:
    data = invite(f"flow-{n}")
    start = data.index(b"Via: ") + len(b"Via: ")
    data = data[:start] + via.format(n=n).encode() + data[data.index(b"\r\n", start) :]
    start = data.index(b"Contact: <") + len(b"Contact: <")
    return data[:start] + CONTACT.encode() + data[data.index(b">", start) :]


def _setup(n: int, transport: str = "tcp") -> tuple[CoreDriver, Request]:
    proxy, _ = make_proxy()
    sends = proxy.receive(_invite(n), CONNECTION, transport, 0.0)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(reply(forwarded, 200), address_of(GW1), "udp", 0.1)
    return proxy, forwarded


def _gateway_bye(forwarded: Request, route: str | None = None, uri: str = CONTACT) -> bytes:
    return (
        f"BYE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {GW1.host}:{GW1.port};branch=z9hG4bK-gwbye\r\n"
        f"Route: {route or forwarded.headers.get('record-route')}\r\n"
        f"From: {forwarded.headers.get('to')};tag=gw1\r\nTo: {forwarded.headers.get('from')}\r\n"
        f"Call-ID: {forwarded.call_id}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_a_stream_callers_route_records_its_flow_and_the_gateways_bye_takes_it() -> None:
    proxy, forwarded = _setup(1)
    route = forwarded.headers.get("record-route") or ""
    assert ";flow=198.51.100.7~40123~tcp;sig=" in route
    [bye] = proxy.receive(_gateway_bye(forwarded), address_of(GW1), "udp", 1.0)
    assert request_of(bye).method == "BYE"
    # over the caller's own connection; the Contact only once that connection is gone
    assert (bye.transport, bye.address, bye.fallback) == ("tcp", CONNECTION, ("10.1.1.5", 5077))


def test_a_tampered_added_or_removed_flow_is_refused() -> None:
    proxy, forwarded = _setup(2)
    route = forwarded.headers.get("record-route") or ""
    tampered = {
        "changed": route.replace("40123~tcp", "40124~tcp"),
        "removed": route.replace(";flow=198.51.100.7~40123~tcp", ""),
    }
    udp_proxy, udp_forwarded = _setup(3, "udp")
    udp_route = udp_forwarded.headers.get("record-route") or ""
    assert ";flow=" not in udp_route  # nothing to reuse over UDP
    added = udp_route.replace(";sig=", ";flow=203.0.113.66~5060~tcp;sig=")
    cases = [(proxy, tampered["changed"]), (proxy, tampered["removed"]), (udp_proxy, added)]
    for driver, bad in cases:
        [answer] = driver.receive(_gateway_bye(forwarded, bad), address_of(GW1), "udp", 1.0)
        assert response_of(answer).status == 403, bad
        assert [e.reason for e in driver.last if isinstance(e, RouteRefused)] == ["signature"]


def test_a_route_without_a_flow_verifies_and_routes_as_before() -> None:
    proxy, forwarded = _setup(4, "udp")
    uri = "sip:alice@10.1.1.5:5077"
    [bye] = proxy.receive(_gateway_bye(forwarded, uri=uri), address_of(GW1), "udp", 1.0)
    assert (bye.transport, bye.address, bye.fallback) == ("udp", ("10.1.1.5", 5077), None)


def test_a_request_uri_over_another_transport_than_the_flows_is_followed() -> None:
    proxy, forwarded = _setup(5)
    uri = "sip:alice@10.1.1.5:5077"  # UDP: the flow's connection cannot carry it
    [bye] = proxy.receive(_gateway_bye(forwarded, uri=uri), address_of(GW1), "udp", 1.0)
    assert (bye.transport, bye.address, bye.fallback) == ("udp", ("10.1.1.5", 5077), None)


def test_the_callers_own_requests_still_go_to_the_gateway() -> None:
    proxy, forwarded = _setup(6)
    bye = (
        f"BYE sip:gw@{GW1.host}:{GW1.port} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 10.1.1.5:5077;branch=z9hG4bK-cbye\r\n"
        f"Route: {forwarded.headers.get('record-route')}\r\n"
        f"From: {forwarded.headers.get('from')}\r\nTo: {forwarded.headers.get('to')};tag=gw1\r\n"
        f"Call-ID: {forwarded.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    [to_gateway] = proxy.receive(bye, CONNECTION, "tcp", 1.0)
    assert (to_gateway.address, to_gateway.fallback) == (address_of(GW1), None)


def test_an_alias_is_offered_only_over_a_stream_and_only_for_the_sources_own_host() -> None:
    proxy, _ = make_proxy()
    own = "SIP/2.0/TCP 198.51.100.7:5077;alias;branch=z9hG4bK-a{n}"
    other = "SIP/2.0/TCP 192.0.2.99:5077;alias;branch=z9hG4bK-a{n}"
    proxy.receive(_invite(7, via=own), CONNECTION, "tcp", 0.0)
    assert [e for e in proxy.last if isinstance(e, AliasOffered)] == [
        AliasOffered("tcp", CONNECTION, ("198.51.100.7", 5077))
    ]
    proxy.receive(_invite(8, via=other), CONNECTION, "tcp", 0.0)
    assert not [e for e in proxy.last if isinstance(e, AliasOffered)]
    proxy.receive(_invite(9, via=own.replace("TCP", "UDP")), CONNECTION, "udp", 0.0)
    assert not [e for e in proxy.last if isinstance(e, AliasOffered)]
