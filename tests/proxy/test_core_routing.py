"""The core's part in routing: refusals answered upstream, and challenge affinity."""

from __future__ import annotations

from coreharness import (
    CALLER,
    GW1,
    GW2,
    PROXY,
    CoreDriver,
    RequestSelection,
    Selection,
    address_of,
    invite,
    make_proxy,
    reply,
    request_of,
    response_of,
    sent_to,
)

from sipdispatch.dispatch.routes import UNTRUSTED
from sipdispatch.proxy.core import CoreSettings, Proxy, Signer
from sipdispatch.proxy.core.affinity import ChallengeAffinity
from sipdispatch.proxy.events import BranchStarted, HashKeyMissing, RequestRefused


def test_a_refused_request_is_answered_and_counted_without_a_100() -> None:
    def refuse(ctx: RequestSelection) -> Selection:
        assert (ctx.source_host, ctx.method) == (CALLER[0], "INVITE")
        return Selection((), refusal=UNTRUSTED)

    core = CoreDriver(Proxy(CoreSettings({"udp": PROXY}, PROXY), refuse, Signer(b"s" * 32)))
    sends = core.receive(invite("refused@x"), CALLER, "udp", 0.0)
    assert [response_of(s).status for s in sends] == [403]
    assert response_of(sends[0]).reason == "Forbidden"
    assert core.last == [RequestRefused("untrusted-source", "", 403, "INVITE", "refused@x", CALLER)]


def test_a_missing_hash_key_is_reported_and_the_call_goes_on() -> None:
    def missing(ctx: RequestSelection) -> Selection:
        return Selection([GW1], key_missing=4)

    core = CoreDriver(Proxy(CoreSettings({"udp": PROXY}, PROXY), missing, Signer(b"s" * 32)))
    sends = core.receive(invite("nokey@x"), CALLER, "udp", 0.0)
    assert len(sent_to(sends, address_of(GW1))) == 1
    assert HashKeyMissing(4, "nokey@x", CALLER) in core.last


def challenge_then_retry(core: CoreDriver, call_id: str, now: float) -> list[str]:
    """An INVITE challenged by whoever got it, then its retry: the hosts each went to."""
    sends = core.receive(invite(call_id), CALLER, "udp", now)
    first = next(s for s in sends if s.address != CALLER)
    core.receive(reply(request_of(first), 401), first.address, "udp", now + 0.01)
    retry = invite(call_id, extra='Authorization: Digest username="alice"\r\n')
    sends = core.receive(retry, CALLER, "udp", now + 0.1)
    second = next(s for s in sends if s.address != CALLER)
    return [first.address[0], second.address[0]]


def test_the_retry_after_a_401_goes_to_the_destination_that_challenged() -> None:
    core, _ = make_proxy((GW1, GW2))
    for i in range(10):
        # Round-robin offers GW1 to each first INVITE and GW2 to each retry.
        first, second = challenge_then_retry(core, f"auth-{i}@x", float(i))
        assert first == second == GW1.host
    started = [e for e in core.events if isinstance(e, BranchStarted)]
    assert len(started) == 20


def test_challenge_affinity_ends_after_its_time_and_can_be_off() -> None:
    core, _ = make_proxy((GW1, GW2), challenge_affinity_ttl=1.0)
    sends = core.receive(invite("late@x"), CALLER, "udp", 0.0)
    first = next(s for s in sends if s.address != CALLER)
    core.receive(reply(request_of(first), 407), first.address, "udp", 0.01)
    retry = core.receive(invite("late@x"), CALLER, "udp", 5.0)  # too late: round-robin again
    assert [s.address for s in retry if s.address != CALLER] != [first.address]
    off, _ = make_proxy((GW1, GW2), challenge_affinity_size=0)
    first_host, second_host = challenge_then_retry(off, "off@x", 0.0)
    assert first_host != second_host


def test_challenge_affinity_is_bounded() -> None:
    affinity = ChallengeAffinity(ttl=30.0, size=3)
    for i in range(5):
        affinity.remember(f"c{i}", GW1, float(i))
    assert len(affinity) == 3
    assert affinity.lookup("c0", 5.0) is None  # forgotten: the oldest went first
    assert affinity.lookup("c4", 5.0) == GW1.key
    hops = [GW2, GW1]
    ChallengeAffinity.put_first(GW1.key, hops)
    assert hops == [GW1, GW2]
    affinity.remember("c5", GW1, 40.0)  # everything older than 30 s has expired
    assert len(affinity) == 1
    assert affinity.lookup("c5", 70.0) is None


def test_source_tagging_names_the_real_source_and_drops_a_forged_one() -> None:
    core, _ = make_proxy((GW1,), source_header="X-Sipdispatch-Source")
    forged = invite("tag@x", extra="X-Sipdispatch-Source: udp:10.0.0.66:5060\r\n")
    sends = core.receive(forged, CALLER, "udp", 0.0)
    (sent,) = sent_to(sends, address_of(GW1))
    values = request_of(sent).headers.values("x-sipdispatch-source")
    assert values == [f"udp:{CALLER[0]}:{CALLER[1]}"]


def test_without_source_tagging_the_header_is_not_the_proxys_business() -> None:
    core, _ = make_proxy((GW1,))
    sends = core.receive(invite(extra="X-Sipdispatch-Source: anything\r\n"), CALLER, "udp", 0.0)
    (sent,) = sent_to(sends, address_of(GW1))
    assert request_of(sent).headers.values("x-sipdispatch-source") == ["anything"]
