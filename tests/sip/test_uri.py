"""SIP and SIPS URIs: RFC 3261 19.1 examples, RFC 5118 IPv6 references, and what is refused."""

from __future__ import annotations

import pytest

from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.uri import SipUri, format_host, parse_host_port, parse_uri, unescape


def sip(text: str, *, allow_headers: bool = True) -> SipUri:
    uri = parse_uri(text, allow_headers=allow_headers)
    assert isinstance(uri, SipUri)
    return uri


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        # RFC 3261 19.1.3, in order.
        ("sip:alice@atlanta.com", ("sip", "alice", None, "atlanta.com", None, "", "")),
        (
            "sip:alice:secretword@atlanta.com;transport=tcp",
            ("sip", "alice", "secretword", "atlanta.com", None, ";transport=tcp", ""),
        ),
        (
            "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
            ("sips", "alice", None, "atlanta.com", None, "", "subject=project%20x&priority=urgent"),
        ),
        (
            "sip:+1-212-555-1212:1234@gateway.com;user=phone",
            ("sip", "+1-212-555-1212", "1234", "gateway.com", None, ";user=phone", ""),
        ),
        ("sips:1212@gateway.com", ("sips", "1212", None, "gateway.com", None, "", "")),
        ("sip:alice@192.0.2.4", ("sip", "alice", None, "192.0.2.4", None, "", "")),
        (
            "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
            ("sip", None, None, "atlanta.com", None, ";method=REGISTER", "to=alice%40atlanta.com"),
        ),
        (
            "sip:alice;day=tuesday@atlanta.com",
            ("sip", "alice;day=tuesday", None, "atlanta.com", None, "", ""),
        ),
        # RFC 5118 4.1 and 4.10 (a triple colon before an embedded IPv4 address is tolerated).
        ("sip:[2001:db8::10]:5070", ("sip", None, None, "[2001:db8::10]", 5070, "", "")),
        ("sip:[2001:db8:::192.0.2.1]", ("sip", None, None, "[2001:db8:::192.0.2.1]", None, "", "")),
        # Scheme case is folded, the rest is kept as written.
        ("SIP:Bob@Biloxi.COM:5080;LR", ("sip", "Bob", None, "Biloxi.COM", 5080, ";LR", "")),
        ("sip:gw.example.com.", ("sip", None, None, "gw.example.com.", None, "", "")),
    ],
)
def test_rfc_examples_are_split_into_their_parts(
    text: str, parts: tuple[str, str | None, str | None, str, int | None, str, str]
) -> None:
    uri = sip(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers) == (
        parts
    )


@pytest.mark.parametrize(
    "text", ["sip:alice@atlanta.com;transport=tcp", "sips:[2001:db8::1]:5061?x=y", "sip:a:b@c:1"]
)
def test_a_uri_prints_as_it_was_written(text: str) -> None:
    assert str(sip(text)) == text


@pytest.mark.parametrize(
    "text", ["tel:+1-201-555-0123", "http://example.com/x", "urn:service:sos", "im:a@b"]
)
def test_other_schemes_stay_opaque_text(text: str) -> None:
    assert parse_uri(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "atlanta.com",  # no scheme
        "sip:",  # nothing after it
        "1sip:a",  # a scheme starts with a letter
        "sip:alice@",  # no host
        "sip:@atlanta.com",  # empty user
        "sip:al ice@atlanta.com",  # whitespace
        "sip:<alice>@atlanta.com",  # delimiters
        "sip:alice@atlanta..com",  # empty label
        "sip:alice@-atlanta.com",  # label starting with a hyphen
        "sip:alice@atlanta_com",  # underscore
        "sip:alice@atlanta.com:",  # empty port
        "sip:alice@atlanta.com:5o60",
        "sip:alice@atlanta.com:65536",
        "sip:[2001:db8::1",  # unclosed reference
        "sip:[2001:db8::g]",  # not an IPv6 address
        "sip:[2001:db8::1]5060",  # junk after the reference
        'sip:alice@atlanta.com;a=b"c',  # a quote in a parameter
        "sip:alice@atlanta.com?subject=a{b}",
    ],
)
def test_what_is_not_a_uri_is_a_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_a_request_uri_may_not_carry_headers() -> None:
    assert sip("sip:bob@biloxi.com?subject=hi").headers == "subject=hi"
    # parsed (and remembered) just above as a header's URI: refused all the same
    with pytest.raises(RemoteProtocolError, match="headers"):
        parse_uri("sip:bob@biloxi.com?subject=hi", allow_headers=False)


def test_a_uri_seen_before_parses_to_the_same_parts() -> None:
    text = "sip:alice@atlanta.example.com:5070;transport=tcp"
    first, again = parse_uri(text), parse_uri(text)
    assert first == again
    assert isinstance(again, SipUri)
    assert (again.user, again.port) == ("alice", 5070)
    with pytest.raises(RemoteProtocolError):  # and a bad one stays bad however often it comes
        parse_uri("sip:alice@bad host")
    with pytest.raises(RemoteProtocolError):
        parse_uri("sip:alice@bad host")


def test_parameters_are_read_by_name_whatever_their_case() -> None:
    uri = sip("sip:gw.example.com;LR;Transport=TCP;maddr=239.255.255.1")
    assert uri.param("lr") == ""  # a flag
    assert uri.param("transport") == "TCP"
    assert uri.param("maddr") == "239.255.255.1"
    assert uri.param("ttl") is None
    assert sip("sip:gw").param("lr") is None
    # the name inside another parameter's name or value is not that parameter
    assert sip("sip:gw;x=transport;maddrs=1").param("transport") is None
    assert sip("sip:gw;x=transport;maddrs=1").param("maddr") is None


@pytest.mark.parametrize(
    ("text", "transport", "port", "address"),
    [
        ("sip:gw", "udp", 5060, "gw"),
        ("sip:gw;transport=TCP", "tcp", 5060, "gw"),
        ("sips:gw", "tls", 5061, "gw"),
        ("sip:[::1]:5070", "udp", 5070, "::1"),
    ],
)
def test_transport_port_and_socket_address_defaults(
    text: str, transport: str, port: int, address: str
) -> None:
    uri = sip(text)
    assert (uri.transport, uri.default_port(), uri.host_address) == (transport, port, address)


def test_host_and_port_of_a_sent_by() -> None:
    assert parse_host_port("192.0.2.1:5060") == ("192.0.2.1", 5060)
    assert parse_host_port("[2001:db8::1]") == ("[2001:db8::1]", None)
    with pytest.raises(RemoteProtocolError, match="Via sent-by: bad host"):
        parse_host_port("a b", "Via sent-by")
    # read again (from memory now), the same; a bad one still refused, naming its place
    assert parse_host_port("192.0.2.1:5060") == ("192.0.2.1", 5060)
    for _ in range(2):
        with pytest.raises(RemoteProtocolError, match="URI host: bad port"):
            parse_host_port("192.0.2.1:65536", "URI host")


def test_format_host_brackets_bare_ipv6_addresses_only() -> None:
    assert format_host("2001:db8::1", 5060) == "[2001:db8::1]:5060"
    assert format_host("[2001:db8::1]", None) == "[2001:db8::1]"
    assert format_host("gw", None) == "gw"


def test_unescape_decodes_once_and_keeps_a_nul() -> None:
    assert unescape("sips%3Auser%40example.com") == "sips:user@example.com"
    assert unescape("%2541") == "%41"
    assert unescape("null-%00-null") == "null-\x00-null"
    assert unescape("plain") == "plain"
