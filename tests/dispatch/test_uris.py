"""Destination URIs, sockets and hosts as people write them in tables."""

from __future__ import annotations

import re

import pytest

from sipdispatch.dispatch import keys, uris
from sipdispatch.sip.uri import SipUri


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("sip:10.0.0.5", "sip:10.0.0.5:5060;transport=udp"),
        ("SIP:GW.Example.COM.:5080;LR;Transport=TCP", "sip:gw.example.com:5080;transport=tcp"),
        ("sips:gw.example.com", "sips:gw.example.com:5061;transport=tls"),
        ("sips:gw.example.com;transport=tcp", "sips:gw.example.com:5061;transport=tls"),
        ("sip:gw;transport=tls", "sip:gw:5061;transport=tls"),
        ("sip:queue:secret@[2001:DB8:0::1]:5070", "sip:queue@[2001:db8::1]:5070;transport=udp"),
        ("sip:alice@10.0.0.5?subject=x", "sip:alice@10.0.0.5:5060;transport=udp"),
    ],
)
def test_a_destination_is_read_into_its_canonical_form(text: str, canonical: str) -> None:
    uri = uris.parse_sip_uri(text)
    assert isinstance(uri, SipUri)  # the one URI model of the SIP layer
    assert str(uri) == canonical
    assert uris.normalise(text) == canonical
    assert uris.parse_sip_uri(canonical) == uri  # canonical is a fixed point


def test_the_canonical_uri_gives_what_a_destination_needs() -> None:
    uri = uris.parse_sip_uri("sips:Bob@[2001:db8::1]")
    assert (uri.user, uri.host_address, uri.port, uri.transport) == (
        "Bob",
        "2001:db8::1",
        5061,
        "tls",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo", "'foo' is not a SIP URI (expected sip:host[:port])"),
        ("sip:", "'sip:' is not a SIP URI (expected sip:host[:port])"),
        ("tel:+1-201-555-0123", "is not a SIP URI (expected sip:host[:port])"),
        ("sip:gw_1", "'sip:gw_1' is not a SIP URI: URI host: bad host 'gw_1'"),
        ("sip:a b", "'sip:a b' is not a SIP URI"),
        ("sip:10.0.0.1:0", "'sip:10.0.0.1:0' has an invalid port '0'"),
        ("sip:10.0.0.1:", "is not a SIP URI: URI host: bad port"),
        ("sip:999.1.1.1", "host '999.1.1.1' is not an IPv4 address"),
        ("sip:10.0.0", "host '10.0.0' is not an IPv4 address"),
        ("sip:[2001:db8:::1]", "is not a SIP URI: URI host: bad IPv6 reference"),
        (f"sip:{'a' * 64}.example.com", "is not a host name or IP address"),
        (f"sip:{'a.' * 127}com", "is not a host name or IP address"),
        ("sip:gw;transport=sctp", "has transport 'sctp'; expected one of udp, tcp, tls"),
        ("sip:gw;transport", "has transport ''"),
        ("sips:gw;transport=udp", "a sips URI cannot use transport=udp"),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        uris.parse_sip_uri(text)


def test_dns_limits_are_those_of_resolvable_names() -> None:
    longest_label = "a" * 63
    assert uris.parse_host(f"{longest_label}.example.com") == f"{longest_label}.example.com"
    name = ".".join(["abcdefghi"] * 25) + ".abc"  # 253 characters
    assert uris.parse_host(name) == name
    with pytest.raises(ValueError, match="not a host name"):
        uris.parse_host(name + "d")


@pytest.mark.parametrize(
    ("text", "host"),
    [("10.0.0.1", "10.0.0.1"), ("[2001:DB8::1]", "2001:db8::1"), ("GW.example.", "gw.example")],
)
def test_hosts_are_canonical(text: str, host: str) -> None:
    assert uris.parse_host(text) == host


@pytest.mark.parametrize(
    ("text", "message"),
    [("[::1", "unclosed"), ("[::g]", "not an IPv6 address"), ("", "not a host name")],
)
def test_bad_hosts(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        uris.parse_host(text)


def test_sockets_and_advertised_addresses() -> None:
    socket = uris.parse_socket("TCP:[2001:db8::1]:5070")
    assert (socket.transport, socket.host, socket.port) == ("tcp", "2001:db8::1", 5070)
    assert str(socket) == "tcp:[2001:db8::1]:5070"
    assert str(uris.parse_socket("udp:10.0.0.1:5060")) == "udp:10.0.0.1:5060"
    assert uris.parse_hostport("proxy.example.com") == ("proxy.example.com", None)
    assert uris.parse_hostport("[::1]:5062") == ("::1", 5062)
    for bad, message in [
        ("sctp:10.0.0.1:5060", "is not a socket"),
        ("udp:10.0.0.1", "has no port"),
        ("udp:[::1]x:5060", "junk after the IPv6 address"),
        ("udp:10.0.0.1:99999", "invalid port"),
    ]:
        with pytest.raises(ValueError, match=message):
            uris.parse_socket(bad)


@pytest.mark.parametrize(
    ("value", "identity"),
    [
        ('"Alice" <sip:Alice@Atlanta.COM:5060;transport=tcp>;tag=1', "Alice@atlanta.com"),
        ("sip:alice@atlanta.com?subject=x", "alice@atlanta.com"),
        ("<sips:bob@[2001:DB8::1]:5061>", "bob@[2001:db8::1]"),
        ("sip:atlanta.com", "atlanta.com"),
        ("<tel:+1-201-555-0123>", "+1-201-555-0123"),
    ],
)
def test_hash_keys_reduce_a_uri_to_user_at_host(value: str, identity: str) -> None:
    assert keys.uri_user_host(value) == identity
