"""The RFC 4475 / RFC 5118 torture messages sent to the proxy core: each one is forwarded,
rejected with the status its RFC names, or dropped, and none leaves state behind."""

from __future__ import annotations

import pytest
from coreharness import CALLER, GW1, CoreDriver, make_proxy, request_of, response_of

from corpus import MESSAGES, TortureMessage
from sipdispatch.proxy.core.policy import DEFAULT_METHODS
from sipdispatch.sip import codec

REQUESTS = [m for m in MESSAGES if m.kind == "request"]

#: Where the balancer's policy differs from a general-purpose proxy's, and why.
POLICY: dict[str, tuple[int, str]] = {
    # A pre-loaded Route to a foreign host: following it would make the balancer an open relay.
    "wsinv.dat": (403, "Route to a foreign host"),
    "mpart01.dat": (403, "Route to a foreign host"),
    # In-dialog requests (To tag) that do not carry our Record-Route cannot belong to a dialog
    # this balancer set up; like Kamailio's default script, answer 404 rather than guess.
    "via-received-param-with-delim": (404, "in-dialog request without our Route"),
    "mult-ip-in-header": (404, "in-dialog request without our Route"),
    # NUL, BEL and DEL as quoted-pairs in a display name are legal, yet a control character in
    # a header is refused whatever escapes it: downstream parsers have been broken by less.
    "intmeth.dat": (400, "control characters in a header"),
}


def _drain(proxy: CoreDriver) -> None:
    while (deadline := proxy.next_deadline()) is not None:
        proxy.on_timer(deadline)


@pytest.mark.parametrize("case", REQUESTS, ids=str)
def test_request_outcome(case: TortureMessage) -> None:
    proxy, _ = make_proxy()
    sends = proxy.receive(case.data, CALLER, "udp", 0.0)
    to_caller = [response_of(s) for s in sends if s.address == CALLER]
    to_gateway = [request_of(s) for s in sends if s.address == (GW1.host, GW1.port)]
    if case.name in POLICY:
        assert [r.status for r in to_caller] == [POLICY[case.name][0]]
        assert to_gateway == []
    elif case.outcome == "forward" and codec.parse(case.data).method not in DEFAULT_METHODS:
        # REGISTER and unknown methods are not a call dispatcher's (the method rule): 405.
        assert [r.status for r in to_caller] == [405]
        assert to_caller[0].headers.get("allow") == ", ".join(DEFAULT_METHODS)
        assert to_gateway == []
    elif case.outcome == "forward":
        assert len(to_gateway) == 1
        assert [r.status for r in to_caller if r.status >= 200] == []
        forwarded = to_gateway[0]
        assert forwarded.body == codec.parse(case.data).body
        assert forwarded.headers.get("max-forwards") is not None
    elif case.outcome == "reject":
        assert to_gateway == []
        assert [r.status for r in to_caller] in ([c] for c in case.response_codes)
    else:
        assert sends == []
    _drain(proxy)
    assert (proxy.transaction_count, proxy.branch_count, proxy.remembered_count) == (0, 0, 0)


@pytest.mark.parametrize("case", [m for m in MESSAGES if m.kind == "response"], ids=str)
def test_stray_responses_are_dropped(case: TortureMessage) -> None:
    proxy, _ = make_proxy()
    assert proxy.receive(case.data, (GW1.host, GW1.port), "udp", 0.0) == []
    assert proxy.next_deadline() is None


def test_garbage_and_truncations_never_crash_the_core() -> None:
    proxy, _ = make_proxy()
    for case in MESSAGES:
        for cut in range(0, len(case.data), max(1, len(case.data) // 25)):
            proxy.receive(case.data[:cut], CALLER, "udp", 0.0)
    _drain(proxy)
    assert (proxy.transaction_count, proxy.branch_count, proxy.remembered_count) == (0, 0, 0)
