"""The request policy in the core: what a proxy on a public address refuses, and what passes.

Each rule is shown refusing (with its answer, or none, and its metrics label) and letting the
ordinary call through; ``policy.OFF`` refuses nothing.
"""

from __future__ import annotations

import pytest
from coreharness import (
    CALLER,
    GW1,
    PROXY,
    CoreDriver,
    Hop,
    address_of,
    invite,
    make_proxy,
    request_of,
    response_of,
    sent_to,
)
from prometheus_client import CollectorRegistry

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core import policy
from sipdispatch.proxy.core.policy import RequestPolicy
from sipdispatch.proxy.events import MessageRejected
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.settings import ProxySettings
from sipdispatch.sip import codec
from sipdispatch.sip.message import Request

OURS = RequestPolicy(domains=frozenset({PROXY[0], "sip.example.com"}))


def _rejections(proxy: CoreDriver) -> list[MessageRejected]:
    return [e for e in proxy.last if isinstance(e, MessageRejected)]


def _with(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize(
    "agent",
    [
        "friendly-scanner",
        "sipvicious/0.3.8",
        "sipcli/v1.8",
        "sip-scan",
        "VaxSIPUserAgent/3.1",
        "iWar",
        "sundayddr",
        "Friendly-Scanner",  # any case
    ],
)
def test_a_scanner_is_dropped_without_an_answer(agent: str) -> None:
    proxy, _ = make_proxy(policy=OURS)
    message = invite(extra=f"User-Agent: {agent}\r\n")
    assert proxy.receive(message, CALLER, "udp", 0.0) == []
    (refused,) = _rejections(proxy)
    assert (refused.rule, refused.source) == ("user-agent", CALLER)
    assert proxy.transaction_count == 0
    # OPTIONS (svmap) and REGISTER (svwar, svcrack) are dropped alike: the scan sees no SIP.
    for method in ("OPTIONS", "REGISTER"):
        probe = message.replace(b"INVITE", method.encode())
        assert proxy.receive(probe, CALLER, "udp", 0.0) == []


def test_an_ordinary_user_agent_passes() -> None:
    proxy, _ = make_proxy(policy=OURS)
    sends = proxy.receive(invite(extra="User-Agent: Asterisk PBX 20\r\n"), CALLER, "udp", 0.0)
    assert len(sent_to(sends, address_of(GW1))) == 1


def test_a_method_outside_the_list_gets_405_with_allow() -> None:
    proxy, _ = make_proxy(policy=OURS)
    register = invite().replace(b"INVITE", b"REGISTER")
    (answer,) = proxy.receive(register, CALLER, "udp", 0.0)
    response = response_of(answer)
    assert (response.status, answer.address) == (405, CALLER)
    assert response.headers.get("allow") == ", ".join(policy.DEFAULT_METHODS)
    assert _rejections(proxy)[0].rule == "method"
    # A list of one's own; ACK and CANCEL always pass with it.
    assert RequestPolicy(methods=("INVITE", "register")).allow == "INVITE, ACK, CANCEL, REGISTER"
    proxy, _ = make_proxy(policy=RequestPolicy(methods=("INVITE", "REGISTER")))
    assert len(sent_to(proxy.receive(register, CALLER, "udp", 0.0), address_of(GW1))) == 1


@pytest.mark.parametrize(
    ("uri", "forwarded"),
    [
        (f"sip:service@{PROXY[0]}", True),
        (f"sip:service@{PROXY[0]}:5080;user=phone", True),
        ("sip:+15551234;npdi@SIP.Example.com", True),  # a host is case-insensitive
        ("tel:+15551234", True),  # a tel: URI names no host
        ("sip:service@evil.example.net", False),
        ("sip:10.9.9.9", False),
        ("sip:service@sip.example.com.evil.net", False),
    ],
)
def test_a_new_request_must_name_one_of_our_hosts(uri: str, forwarded: bool) -> None:
    proxy, _ = make_proxy(policy=OURS)
    message = _with(invite(), f"sip:service@{PROXY[0]}".encode(), uri.encode())
    sends = proxy.receive(message, CALLER, "udp", 0.0)
    if forwarded:
        assert len(sent_to(sends, address_of(GW1))) == 1
        return
    assert sent_to(sends, address_of(GW1)) == []
    final = [response_of(s) for s in sends if response_of(s).status >= 200]
    assert [(r.status, r.reason) for r in final] == [(403, "Not Relaying")]
    assert _rejections(proxy)[0].rule == "domain"


def test_the_proxys_own_names_are_its_advertised_and_listening_addresses() -> None:
    local = {"udp": ("10.1.1.1", 5060), "tcp": ("10.1.1.2", 5060)}
    built = ProxySettings(allow_domains=("sip.example.com",)).request_policy_for(
        local, ("lb.example.com", 5060), names=("[::1]",)
    )
    assert built.domains == {"10.1.1.1", "10.1.1.2", "lb.example.com", "sip.example.com", "::1"}
    assert ProxySettings(allow_domains=("*",)).request_policy_for(local, PROXY).domains is None
    assert ProxySettings(request_policy=False).request_policy_for(local, PROXY) is policy.OFF


def _gateway_is_the_proxy() -> tuple[CoreDriver, list[bytes]]:
    """A proxy whose only destination is itself (a misconfiguration the issue measured)."""
    itself = Hop(PROXY[0], PROXY[1], "udp", DestinationKey.parse(1, f"sip:{PROXY[0]}:5060"))
    proxy, _ = make_proxy([itself], policy=OURS)
    first = proxy.receive(invite(), CALLER, "udp", 0.0)
    return proxy, [s.data for s in sent_to(first, PROXY)]


def test_a_request_that_comes_back_unchanged_gets_482() -> None:
    proxy, (looped,) = _gateway_is_the_proxy()
    sends = proxy.receive(looped, PROXY, "udp", 0.01)
    assert [response_of(s).status for s in sends] == [482]  # and nothing forwarded again
    assert _rejections(proxy)[0].rule == "loop"


def test_a_spiral_is_no_loop() -> None:
    # The request comes back with another Request-URI (a gateway that rewrote it): on it goes.
    proxy, (looped,) = _gateway_is_the_proxy()
    spiral = _with(looped, f"INVITE sip:service@{PROXY[0]}".encode(), b"INVITE sip:2000@10.0.0.1")
    sends = proxy.receive(spiral, PROXY, "udp", 0.01)
    forwarded = [request_of(s) for s in sent_to(sends, PROXY) if s.data.startswith(b"INVITE")]
    assert len(forwarded) == 1


def test_a_forged_or_foreign_via_of_ours_is_no_loop() -> None:
    proxy, (looped,) = _gateway_is_the_proxy()
    # The same Via, but of another proxy's address: not ours.
    elsewhere = looped.replace(
        f"UDP {PROXY[0]}:{PROXY[1]};branch".encode(), b"UDP 10.7.7.7:5060;branch"
    )
    sends = proxy.receive(elsewhere, PROXY, "udp", 0.01)
    assert any(s.data.startswith(b"INVITE") for s in sends)


@pytest.mark.parametrize(
    ("received", "sent"), [("255", "70"), ("71", "70"), ("20", "19"), (None, "70")]
)
def test_max_forwards_is_lowered_to_the_ceiling(received: str | None, sent: str) -> None:
    proxy, _ = make_proxy(policy=OURS)
    message = invite()
    if received is None:
        message = _with(message, b"Max-Forwards: 70\r\n", b"")
    else:
        message = _with(message, b"Max-Forwards: 70", f"Max-Forwards: {received}".encode())
    (forwarded,) = sent_to(proxy.receive(message, CALLER, "udp", 0.0), address_of(GW1))
    assert request_of(forwarded).headers.get("max-forwards") == sent


@pytest.mark.parametrize(
    "header",
    [
        b"Subject: a\rInjected: 1",  # a bare CR
        b"Subject: a\nInjected: 1",  # a bare LF in a CRLF message
        b"Subject: a\x00b",
        b"Subject: \x1b[31mred",
        b"Subject: \x7f",
    ],
)
def test_a_control_character_in_a_header_gets_400(header: bytes) -> None:
    proxy, _ = make_proxy(policy=OURS)
    message = _with(invite(), b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\r\n" + header + b"\r\n")
    sends = proxy.receive(message, CALLER, "udp", 0.0)
    assert sent_to(sends, address_of(GW1)) == []
    assert [response_of(s).status for s in sends] == [400]
    assert _rejections(proxy)[0].rule == "control-character"


@pytest.mark.parametrize(
    ("data", "tainted"),
    [
        (b"OPTIONS sip:x SIP/2.0\r\nSubject:\ta\r\n\r\n\x00\x01", False),  # HTAB; a body
        (b"OPTIONS sip:x SIP/2.0\nSubject: a\n\n\r\x00", False),  # bare LF line ends
        (b"OPTIONS sip:x SIP/2.0\r\nSubject: a", False),  # a datagram without the blank line
        (b"OPTIONS sip:x SIP/2.0\nSubject: a\rb\n\n", True),
        (b"OPTIONS sip:x SIP/2.0\r\nA: \n\rb\r\n\r\n", True),  # LF CR is no line end
        (b"OPTIONS sip:x SIP/2.0\r\nA: b\x00\r\n\r\n", True),
        (b"OPTIONS sip:x\x01 SIP/2.0\r\nA: b\r\n\r\n", True),  # the start line too
    ],
)
def test_what_counts_as_a_control_character(data: bytes, tainted: bool) -> None:
    codec.parse(data)  # off: parsed as before
    if tainted:
        with pytest.raises(codec.ControlCharacterError) as raised:
            codec.parse(data, controls=True)
        assert isinstance(raised.value.partial, Request)  # all of it: it can be answered
    else:
        assert isinstance(codec.parse(data, controls=True), Request)


def test_a_scanners_request_with_a_control_character_gets_no_answer_either() -> None:
    proxy, _ = make_proxy(policy=OURS)
    message = invite(extra="User-Agent: friendly-scanner\r\nSubject: a\x00\r\n")
    assert proxy.receive(message, CALLER, "udp", 0.0) == []
    assert _rejections(proxy)[0].rule == "user-agent"


def test_responses_are_not_checked_for_control_characters() -> None:
    # They come from the destinations; what they copy from a request was checked in it.
    response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nSubject: \x00\r\n\r\n"
    assert codec.parse(response, controls=True).headers.get("subject") == "\x00"


def test_off_refuses_nothing() -> None:
    proxy, _ = make_proxy(policy=policy.OFF)
    scanner = _with(
        invite(extra="User-Agent: friendly-scanner\r\n"), b"INVITE sip:", b"REGISTER sip:"
    )
    scanner = scanner.replace(b"CSeq: 1 INVITE", b"CSeq: 1 REGISTER")
    scanner = _with(scanner, f"@{PROXY[0]}".encode(), b"@elsewhere.example")
    scanner = _with(scanner, b"Max-Forwards: 70", b"Max-Forwards: 255")
    (forwarded,) = sent_to(proxy.receive(scanner, CALLER, "udp", 0.0), address_of(GW1))
    assert request_of(forwarded).headers.get("max-forwards") == "254"
    assert not policy.OFF.active


def test_refusals_are_counted_by_rule() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry, lambda: None, lambda: 0)
    proxy, _ = make_proxy(policy=OURS)
    proxy.receive(invite(extra="User-Agent: friendly-scanner\r\n"), CALLER, "udp", 0.0)
    proxy.receive(invite().replace(b"INVITE", b"PUBLISH"), CALLER, "udp", 0.0)
    proxy.receive(invite(extra="User-Agent: sipcli/v1.8\r\n"), CALLER, "udp", 0.0)
    metrics.observe(proxy.events)
    count = registry.get_sample_value
    assert count("sipdispatch_requests_refused_total", {"reason": "user-agent", "route": ""}) == 2
    assert count("sipdispatch_requests_refused_total", {"reason": "method", "route": ""}) == 1
    assert count("sipdispatch_messages_rejected_total", {"status": "405"}) == 1


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("sip:service@127.0.0.1:5060", "127.0.0.1"),
        ("sip:sip.example.com", "sip.example.com"),
        ("SIPS:alice@Sip.Example.COM;transport=tcp", "Sip.Example.COM"),
        ("sip:alice:secret@evil.example.net?subject=x", "evil.example.net"),
        ("sip:[2001:db8::1]:5060;lr", "[2001:db8::1]"),
        ("sip:bob@[::1]", "[::1]"),
        ("sip:+15551234567;phone-context=x@gw.example.org;user=phone", "gw.example.org"),
        ("sip:host;maddr=10.0.0.1?a=b@c", "c"),  # the first "@" ends the user part, as parsed
        ("tel:+15551234567", None),
        ("sipx:service@evil.example.net", None),
        ("sip", None),
    ],
)
def test_request_uri_host(uri: str, host: str | None) -> None:
    """The host the domain rule checks: as written, whatever the scheme's case, user part,
    password, port, parameters or headers; None for a URI of another scheme."""
    assert policy.request_uri_host(uri) == host
