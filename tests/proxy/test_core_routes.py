"""Signed routes bound to now and to the table: expiry, gateways that left, the direction
check, and the key list that lets a key rotate under calls."""

from __future__ import annotations

import itertools

from coreharness import (
    CALLER,
    GW1,
    GW2,
    PROXY,
    CoreDriver,
    RoundRobin,
    address_of,
    invite,
    parsed,
    reply,
    request_of,
    response_of,
    sent_to,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core import (
    CoreSettings,
    Hop,
    Listener,
    Proxy,
    Signer,
    destination_id,
    dialogs,
)
from sipdispatch.proxy.core.dialogs import from_tag, record_routes
from sipdispatch.proxy.events import RouteRefused
from sipdispatch.sip import codec, values
from sipdispatch.sip.message import Request
from sipdispatch.sip.uri import SipUri
from sipdispatch.sip.values import parse_name_addr

LIFETIME = 600.0
OFFSET = 1_800_000_000.0  # what the engine adds to its monotonic clock for Unix time
OLD_KEY, NEW_KEY = b"o" * 32, b"n" * 32
BRANCHES = itertools.count(1)


def replica(signer: Signer | None = None, hops: tuple[Hop, ...] = (GW1,)) -> CoreDriver:
    """One proxy replica serving ``hops``, with ``signer`` (default: one with `OLD_KEY`)."""
    settings = CoreSettings(
        local={"udp": PROXY, "tcp": PROXY},
        advertise=PROXY,
        dialog_lifetime=LIFETIME,
        clock_offset=OFFSET,
    )
    core = Proxy(settings, RoundRobin(hops), signer or Signer(OLD_KEY))
    core.destinations = frozenset(destination_id(h.host, h.port, h.transport) for h in hops)
    return CoreDriver(core)


def call(proxy: CoreDriver, now: float = 0.0, source: tuple[str, int] = CALLER) -> Request:
    """A call set up through ``proxy`` to GW1 at ``now``: the INVITE as GW1 received it."""
    sends = proxy.receive(invite(), source, "udp", now)
    forwarded = request_of(sent_to(sends, address_of(GW1))[0])
    proxy.receive(reply(forwarded, 200), address_of(GW1), "udp", now + 0.05)
    return forwarded


def caller_bye(forwarded: Request, route: str | None = None) -> bytes:
    """The caller's BYE, with the Record-Route of ``forwarded`` (or ``route``) as its Route."""
    route = route or forwarded.headers.get("record-route") or ""
    return (
        "BYE sip:gw@127.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-bye-{next(BRANCHES)}\r\n"
        f"Route: {route}\r\nFrom: {forwarded.headers.get('from')}\r\n"
        f"To: {forwarded.headers.get('to')};tag=gw1\r\n"
        f"Call-ID: {forwarded.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def gateway_bye(forwarded: Request) -> bytes:
    """GW1's BYE towards the caller."""
    return (
        f"BYE sip:alice@{CALLER[0]}:{CALLER[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {GW1.host}:{GW1.port};branch=z9hG4bK-gwbye-{next(BRANCHES)}\r\n"
        f"Route: {forwarded.headers.get('record-route')}\r\n"
        f"From: {forwarded.headers.get('to')};tag=gw1\r\nTo: {forwarded.headers.get('from')}\r\n"
        f"Call-ID: {forwarded.call_id}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answer(proxy: CoreDriver, data: bytes, now: float, source: tuple[str, int] = CALLER) -> str:
    """Where ``data`` went: "GW1", "caller", or the status the proxy answered itself, with the
    reason it reported."""
    sends = proxy.receive(data, source, "udp", now)
    assert len(sends) == 1
    message = parsed(sends[0])
    if isinstance(message, Request):
        return "GW1" if sends[0].address == address_of(GW1) else "caller"
    refused = [e.reason for e in proxy.last if isinstance(e, RouteRefused)]
    return f"{message.status} {' '.join(refused)}"


def test_a_route_carries_its_expiry_in_unix_seconds_and_the_signature_covers_it() -> None:
    proxy = replica()
    forwarded = call(proxy, now=100.0)
    route = parse_name_addr(forwarded.headers.get("record-route") or "").uri
    assert route.param("exp") == str(int(OFFSET + 100.0 + LIFETIME))  # type: ignore[union-attr]
    later = str(int(OFFSET + 100.0 + 10 * LIFETIME))
    stretched = caller_bye(forwarded).replace(
        f";exp={route.param('exp')};".encode(),  # type: ignore[union-attr]
        f";exp={later};".encode(),
    )
    assert answer(proxy, stretched, 100.0 + 2 * LIFETIME) == "403 signature"


def test_a_route_is_honoured_until_the_dialog_lifetime_ends_then_refused() -> None:
    proxy = replica()
    forwarded = call(proxy, now=100.0)
    assert answer(proxy, caller_bye(forwarded), 100.0 + LIFETIME - 1) == "GW1"
    assert answer(proxy, caller_bye(forwarded), 100.0 + LIFETIME + 1) == "403 expired"
    assert answer(proxy, gateway_bye(forwarded), 100.0 + LIFETIME + 1, address_of(GW1)) == (
        "403 expired"
    )


def test_a_route_to_a_gateway_that_left_the_table_gets_404() -> None:
    proxy = replica()
    forwarded = call(proxy)
    proxy.core.destinations = frozenset([destination_id(GW2.host, GW2.port, GW2.transport)])
    assert answer(proxy, caller_bye(forwarded), 1.0) == "404 gone"
    assert answer(proxy, gateway_bye(forwarded), 1.0, address_of(GW1)) == "404 gone"
    # back in the table (a pod that came back, a table edit undone): routed again
    proxy.core.destinations = frozenset([destination_id(GW1.host, GW1.port, GW1.transport)])
    assert answer(proxy, caller_bye(forwarded), 1.0) == "GW1"


def test_routes_of_the_older_format_without_an_expiry_are_refused() -> None:
    proxy = replica()
    forwarded = call(proxy)
    route = forwarded.headers.get("record-route") or ""
    old = ";".join(p for p in route.split(";") if not p.startswith("exp="))
    assert "exp=" not in old
    assert answer(proxy, caller_bye(forwarded, old), 1.0) == "403 unsigned"


def test_towards_the_caller_only_the_gateways_address_and_transport_pass() -> None:
    proxy = replica()
    forwarded = call(proxy)
    bye = gateway_bye(forwarded)
    assert answer(proxy, bye, 1.0, ("198.51.100.7", 5060)) == "403 direction"
    # another port of the gateway's address: over TCP that is any connection it opened
    assert answer(proxy, bye, 1.0, (GW1.host, 41234)) == "caller"
    over_tcp = proxy.receive(bye, address_of(GW1), "tcp", 1.0)
    assert response_of(over_tcp[0]).status == 403
    assert [e.reason for e in proxy.last if isinstance(e, RouteRefused)] == ["direction"]


def test_a_tcp_gateways_requests_pass_from_any_port_of_its_address() -> None:
    gw = Hop("127.0.0.4", 5060, "tcp", DestinationKey.parse(1, "sip:127.0.0.4;transport=tcp"))
    proxy = replica(hops=(gw,))
    sends = proxy.receive(invite(), CALLER, "udp", 0.0)
    forwarded = request_of(sent_to(sends, address_of(gw))[0])
    bye = gateway_bye(forwarded).replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/TCP")
    routed = proxy.receive(bye, (gw.host, 50123), "tcp", 1.0)
    assert [s.address for s in routed] == [CALLER]
    assert proxy.receive(bye, (gw.host, 50123), "udp", 1.0)[0].address == (gw.host, 50123)


def test_a_key_rotates_in_three_steps_under_calls_with_none_refused() -> None:
    """Two replicas; calls are set up on one and ended on the other at every step."""
    signers = Signer(OLD_KEY), Signer(OLD_KEY)
    first, second = replica(signers[0]), replica(signers[1])
    signed_old = call(first)

    def step(*keys: bytes) -> None:
        for signer in signers:
            signer.use(*keys)

    step(OLD_KEY, NEW_KEY)  # 1. the new key is accepted everywhere before anyone signs with it
    during_add = call(first, 1.0)
    assert answer(second, caller_bye(signed_old), 2.0) == "GW1"
    step(NEW_KEY, OLD_KEY)  # 2. signing rolls to the new key; the old one still verifies
    signed_new = call(second, 3.0)
    assert answer(first, caller_bye(during_add), 4.0) == "GW1"
    assert answer(first, caller_bye(signed_new), 4.0) == "GW1"
    step(NEW_KEY)  # 3. once the old key's dialogs ended, it goes
    assert answer(second, caller_bye(signed_new), 5.0) == "GW1"
    assert answer(second, caller_bye(signed_old), 5.0) == "403 signature"


def test_a_signer_signs_with_its_first_key_and_accepts_any() -> None:
    both, new_only, old_only = Signer(NEW_KEY, OLD_KEY), Signer(NEW_KEY), Signer(OLD_KEY)
    signature = both.sign("call", "tag")
    assert new_only.verify(signature, "call", "tag")
    assert not old_only.verify(signature, "call", "tag")
    assert both.verify(old_only.sign("call", "tag"), "call", "tag")
    assert not both.verify(old_only.sign("call", "other"), "call", "tag")


def test_a_signature_known_already_is_still_checked_whole_and_forgotten_with_its_key() -> None:
    signer = Signer(OLD_KEY)
    signature = signer.sign("call", "tag")
    assert signer.verify(signature, "call", "tag")
    assert signer.verify(signature, "call", "tag")  # from memory now
    altered = signature[:-1] + ("1" if signature[-1] == "0" else "0")
    assert not signer.verify(altered, "call", "tag")
    assert not signer.verify(signature, "call", "tag2")
    signer.use(NEW_KEY, OLD_KEY)
    assert signer.verify(signature, "call", "tag")
    signer.use(NEW_KEY)  # the old key goes, and what it vouched for with it
    assert not signer.verify(signature, "call", "tag")


def test_the_tag_of_a_from_value_is_read_alike_the_first_time_and_after() -> None:
    for _ in range(2):  # the second round from memory
        assert from_tag('"Alice" <sip:alice@example.com>;tag=1928301774') == "1928301774"
        assert from_tag("<sip:alice@example.com> ; TAG = a.b-c;x=1") == "a.b-c"
        assert from_tag("<sip:alice@example.com>;tag=") is None  # written, but empty
        assert from_tag("<sip:alice@example.com>") is None
        assert from_tag(None) is None


# What TAG_PARAM takes as a From tag (anything but ";", "," and blanks), with the characters a
# URI parameter may not carry (quotes, "<", "=", "`", non-ASCII) drawn often.
_TAGS = st.text(
    alphabet=st.sampled_from("aZ09-._~!*'()%[]/:&+$@`\"<>=?#\u00e9"), min_size=0, max_size=12
)
_LISTENERS = st.sampled_from(
    [
        Listener("udp:10.0.0.1:5060", "udp", ("10.0.0.1", 5060), ("203.0.113.1", 5060)),
        Listener("tcp:10.0.0.1:5060", "tcp", ("10.0.0.1", 5060), ("Proxy.Example.COM", None)),
        Listener("udp:[fd00::1]:5060", "udp", ("fd00::1", 5060), ("fd00::1", 5070)),
    ]
)


@settings(max_examples=300, deadline=None)
@given(tag=_TAGS, inbound=_LISTENERS, outbound=_LISTENERS, stream=st.booleans())
def test_a_route_written_here_is_known_parsed_exactly_as_parsing_its_text_gives(
    tag: str, inbound: Listener, outbound: Listener, stream: bool
) -> None:
    """The proxy records the parse of each Record-Route it writes, so that the dialog's ACK
    and BYE do not parse it again: what it records must be what a parse gives, and where the
    From tag makes the route unparsable (or odd), nothing is recorded and the parse decides."""
    request = request_of_text(
        f"INVITE sip:service@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-p\r\n"
        f"From: <sip:alice@caller.example>;tag={tag}\r\nTo: <sip:service@10.0.0.1>\r\n"
        "Call-ID: prime@caller\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    routes = record_routes(
        request,
        GW1,
        inbound,
        outbound,
        Signer(OLD_KEY),
        expires=1_800_000_600,
        flow=("192.0.2.10", 40000) if stream else None,
    )
    plain = bool(tag) and all(c in "aZ09-._~!*'()%[]/:&+$" for c in tag)
    for route in routes:
        recorded = values._NAME_ADDRS.get(route)
        if not plain:
            assert recorded is None
            continue
        assert recorded is not None
        assert recorded == values._parse_name_addr(route)
        assert isinstance(recorded.uri, SipUri)
        params = recorded.uri.params
        assert dialogs._SIGNED_FIELDS.get(params) == dialogs._read_signed_fields(params)
        assert dialogs._signed_fields(params)[0] == tag


def request_of_text(text: str) -> Request:
    message = codec.parse(text.encode("utf-8"))
    assert isinstance(message, Request)
    return message
