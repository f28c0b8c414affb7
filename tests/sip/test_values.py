"""Header values the proxy reads: lists, parameters, Via, name-addr, CSeq."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipdispatch.sip import values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.uri import SipUri

# --- lists -------------------------------------------------------------------------


def test_lists_split_on_commas_outside_quotes_and_angle_brackets() -> None:
    value = '"Doe, John" <sip:j@a.com;x=1,2>, <sip:b@b.com> ,sip:c@c.com'
    assert values.split_values(value) == [
        '"Doe, John" <sip:j@a.com;x=1,2>',
        "<sip:b@b.com>",
        "sip:c@c.com",
    ]
    assert values.split_values('"a \\" , b" <sip:x@y>') == ['"a \\" , b" <sip:x@y>']


@pytest.mark.parametrize("value", ["a,,b", "a, ,b", ",a", "a,"])
def test_an_empty_list_element_is_a_400(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        values.split_values(value)
    assert info.value.status == 400


def test_split_first_leaves_the_rest_of_the_list_as_written() -> None:
    assert values.split_first("SIP/2.0/UDP a;branch=z9hG4bK1") == (
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        None,
    )
    assert values.split_first("SIP/2.0/UDP a , SIP/2.0/TCP b,SIP/2.0/UDP c") == (
        "SIP/2.0/UDP a",
        "SIP/2.0/TCP b,SIP/2.0/UDP c",
    )
    assert values.split_first('"x, y" <sip:a@b>, <sip:c@d>') == ('"x, y" <sip:a@b>', "<sip:c@d>")
    with pytest.raises(RemoteProtocolError):
        values.split_first(" , SIP/2.0/UDP b")


# --- parameters --------------------------------------------------------------------


def test_parameters_lowercase_names_keep_values_and_read_flags() -> None:
    assert values.parse_params(' ;Branch=z9hG4bK77 ; lr ;received=[2001:db8::9];q="a;b"') == {
        "branch": "z9hG4bK77",
        "lr": "",
        "received": "[2001:db8::9]",
        "q": '"a;b"',
    }
    assert values.parse_params("") == {}


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,6}", fullmatch=True),
            st.none() | st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,6}", fullmatch=True),
        ),
        max_size=4,
    )
)
def test_token_parameters_read_alike_by_the_fast_and_the_general_reader(
    params: list[tuple[str, str | None]],
) -> None:
    text = "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)
    assert values.parse_params(text) == values._parse_generic_params(text)


@pytest.mark.parametrize("text", ["branch=1", ";", ";a=", ';a="open', ";a=b c"])
def test_malformed_parameters_are_a_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        values.parse_params(text)


# --- Via ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        # RFC 3261 20.42
        (
            "SIP/2.0/UDP erlang.bell-telephone.com:5060;branch=z9hG4bK87asdks7",
            ("UDP", "erlang.bell-telephone.com", 5060, {"branch": "z9hG4bK87asdks7"}),
        ),
        (
            "SIP/2.0/UDP 192.0.2.1:5060 ;received=192.0.2.207 ;branch=z9hG4bK77asjd",
            ("UDP", "192.0.2.1", 5060, {"received": "192.0.2.207", "branch": "z9hG4bK77asjd"}),
        ),
        # LWS around "/" and ":" (RFC 4475 wsinv), lower-case transport, IPv6 (RFC 5118).
        (
            "SIP / 2.0 / tcp  spindle.example.com : 6070;branch=z9hG4bK9ikj8",
            ("TCP", "spindle.example.com", 6070, {"branch": "z9hG4bK9ikj8"}),
        ),
        (
            "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3;received=[2001:db8::9:255]",
            (
                "UDP",
                "[2001:db8::9:1]",
                None,
                {"branch": "z9hG4bKas3", "received": "[2001:db8::9:255]"},
            ),
        ),
        ("SIP/2.0/UDP host.;rport", ("UDP", "host.", None, {"rport": ""})),
    ],
)
def test_via_values(text: str, parts: tuple[str, str, int | None, dict[str, str]]) -> None:
    via = values.parse_via(text)
    assert (via.transport, via.host, via.port, via.params) == parts


def test_the_branch_tells_rfc_3261_transactions_apart() -> None:
    assert values.parse_via("SIP/2.0/UDP a;branch=z9hG4bKx").is_rfc3261
    assert not values.parse_via("SIP/2.0/UDP a;branch=z9hG4bK").is_rfc3261  # cookie alone
    assert not values.parse_via("SIP/2.0/UDP a;branch=1234").is_rfc3261
    assert values.parse_via("SIP/2.0/UDP a").branch is None


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",  # no sent-by
        "SIP/3.0/UDP a",
        "SIP/2.0/UDP a..b;branch=z9hG4bK1",  # the same host grammar on the fast path
        "SIP/2.0/UDP a:70000;branch=z9hG4bK1",
        "SIP/2.0/UDP a;branch=z9hG4bK1;x=",
        "SIP/2.0/UDP [::1;branch=z9hG4bK1",
    ],
)
def test_malformed_vias_are_a_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        values.parse_via(text)
    assert info.value.status == 400


def test_a_known_sent_by_still_has_its_parameters_checked() -> None:
    good = values.parse_via("SIP/2.0/UDP gw.example.com:5060;branch=z9hG4bK1")
    assert (good.host, good.port, good.branch) == ("gw.example.com", 5060, "z9hG4bK1")
    # the same sent-by (remembered now) with parameters the fast path does not take
    quoted = values.parse_via('SIP/2.0/UDP gw.example.com:5060;branch=z9hG4bK2;x="a b"')
    assert quoted.params == {"branch": "z9hG4bK2", "x": '"a b"'}
    with pytest.raises(RemoteProtocolError):
        values.parse_via("SIP/2.0/UDP gw.example.com:5060;branch=z9hG4bK1;x=")


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(
    host=st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    port=st.none() | st.integers(1, 65535),
    params=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9.]{0,8}", fullmatch=True),
        max_size=3,
    ),
)
def test_the_fast_and_the_general_via_parsers_agree(
    host: str, port: int | None, params: dict[str, str]
) -> None:
    sent_by = host if port is None else f"{host}:{port}"
    tail = "".join(f";{k}={v}" if v else f";{k}" for k, v in params.items())
    fast = values.parse_via(f"SIP/2.0/UDP {sent_by}{tail}")
    general = values.parse_via(f"SIP/2.0/UDP  {sent_by} {tail}")  # blanks: the general path
    assert (fast.transport, fast.host, fast.port, fast.params) == (
        general.transport,
        general.host,
        general.port,
        general.params,
    )
    assert (fast.host, fast.port, fast.params) == (host, port, params)


def test_vias_equal_by_rfc_3261_have_one_compared_form() -> None:
    sent = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=5060"
    # PJSIP writes the parameters back in its own order; case and blanks may change too
    for spelling in (
        "SIP/2.0/UDP 10.0.0.1:5060;rport=5060;branch=z9hG4bK1",
        "sip / 2.0 / udp 10.0.0.1:5060 ; Branch = z9hG4bK1 ; RPORT=5060",
    ):
        assert values.via_compared_form(spelling) == values.via_compared_form(sent)
    assert values.via_compared_form(sent) == "SIP/2.0/UDP10.0.0.1:5060;branch=z9hG4bK1;rport=5060"
    # what tells Vias apart still does: a value's case, another parameter, another host
    for other in (
        "SIP/2.0/UDP 10.0.0.1:5060;branch=Z9HG4BK1;rport=5060",
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=5060;x",
        "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport=5060",
    ):
        assert values.via_compared_form(other) != values.via_compared_form(sent)
    assert values.via_compared_form("SIP/2.0/UDP h;") == "SIP/2.0/UDPH"
    assert values.via_compared_form("SIP/2.0/UDP h;;b") == "SIP/2.0/UDPH;;b"


# --- name-addr ---------------------------------------------------------------------


def test_name_addr_forms() -> None:
    # RFC 3261 20.20 and 20.39
    to = values.parse_name_addr('"Bob" <sip:bob@biloxi.com>;tag=a6c85cf')
    assert (to.display, to.uri_text, to.tag) == ('"Bob"', "sip:bob@biloxi.com", "a6c85cf")
    assert isinstance(to.uri, SipUri)
    assert to.uri.host == "biloxi.com"
    # A bare addr-spec: the parameters belong to the header, not the URI.
    bare = values.parse_name_addr("sip:+12125551212@server.phone2net.com;tag=887s")
    assert (bare.display, bare.uri_text, bare.params) == (
        None,
        "sip:+12125551212@server.phone2net.com",
        {"tag": "887s"},
    )
    # A token display name, even glued to "<" (RFC 4475 lwsdisp); a tel: URI stays text.
    caller = values.parse_name_addr("Anonymous Caller<tel:+1-201-555-0123>")
    assert (caller.display, caller.uri) == ("Anonymous Caller", "tel:+1-201-555-0123")
    assert values.parse_name_addrs("<sip:a@b>;lr, <sip:c@d>")[1].uri_text == "sip:c@d"


@pytest.mark.parametrize(
    "text",
    [
        '"Bob <sip:bob@biloxi.com>',  # unbalanced quote (RFC 4475 quotbal)
        "<sip:bob@biloxi.com",  # unclosed <
        "<sip: bob@biloxi.com>",  # space inside <> (badaspec)
        "Bob@Home <sip:bob@biloxi.com>",  # display name neither tokens nor quoted (baddn)
        "sip:bob@biloxi.com?subject=x",  # headers outside <> (regbadct)
        '"Bob" sip:bob@biloxi.com',  # a quoted display name needs <>
    ],
)
def test_malformed_name_addrs_are_a_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        values.parse_name_addr(text)
    assert info.value.status == 400


# --- CSeq --------------------------------------------------------------------------


def test_cseq() -> None:
    assert values.parse_cseq("4711 INVITE") == values.CSeq(4711, "INVITE")
    assert values.parse_cseq(" 1\t ACK ") == values.CSeq(1, "ACK")
    assert values.parse_cseq(f"{2**32 - 1} NOTIFY").number == 2**32 - 1


@pytest.mark.parametrize("text", ["INVITE", "1", "-1 INVITE", f"{2**32} INVITE", "1 INV ITE"])
def test_malformed_cseqs_are_a_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        values.parse_cseq(text)
    assert info.value.status == 400
