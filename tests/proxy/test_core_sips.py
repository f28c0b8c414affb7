"""The core's sips rule (RFC 3261 26.2.2) and the Record-Route of a TLS caller, sans-I/O."""

from __future__ import annotations

from collections.abc import Sequence

from coreharness import (
    CALLER,
    GW1,
    GW2,
    PROXY,
    CoreDriver,
    RoundRobin,
    address_of,
    invite,
    request_of,
    response_of,
)

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.core import CoreSettings, Hop, Proxy, Signer, destination_id
from sipdispatch.proxy.core.secure import REASON, STATUS

TLS_PORT = 5061
LOCAL = {"udp": PROXY, "tcp": PROXY, "tls": (PROXY[0], TLS_PORT)}
GW_TLS = Hop("127.0.0.4", 5061, "tls", DestinationKey.parse(1, "sips:127.0.0.4"))


def make_proxy(
    hops: Sequence[Hop], local: dict[str, tuple[str, int]] | None = None
) -> tuple[CoreDriver, RoundRobin]:
    selector = RoundRobin(hops)
    listeners = local or {"udp": PROXY, "tcp": PROXY}
    core = Proxy(CoreSettings(local=listeners, advertise=PROXY), selector, Signer(b"s" * 32))
    core.destinations = frozenset(destination_id(h.host, h.port, h.transport) for h in hops)
    return CoreDriver(core), selector


def _forwarded(sends: list) -> list:  # type: ignore[type-arg]
    return [s for s in sends if not s.data.startswith(b"SIP/2.0")]


def _sips_invite() -> bytes:
    return invite().replace(
        f"INVITE sip:service@{PROXY[0]}".encode(), b"INVITE sips:service@" + PROXY[0].encode()
    )


def _finals(sends: list) -> list[tuple[int, str]]:  # type: ignore[type-arg]
    responses = [response_of(s) for s in sends if s.data.startswith(b"SIP/2.0")]
    return [(r.status, r.reason) for r in responses if r.status >= 200]


def test_a_sips_request_with_only_udp_destinations_is_refused_and_never_sent() -> None:
    proxy, _ = make_proxy((GW1, GW2), local=LOCAL)
    sends = proxy.receive(_sips_invite(), CALLER, "tls", 0.0)
    assert [s for s in sends if s.address in (address_of(GW1), address_of(GW2))] == []
    assert _finals(sends) == [(STATUS, REASON)]


def test_a_sips_request_skips_the_udp_destinations_for_a_tls_one() -> None:
    proxy, _ = make_proxy((GW1, GW_TLS, GW2), local=LOCAL)
    sends = proxy.receive(_sips_invite(), CALLER, "tls", 0.0)
    forwarded = [s for s in sends if not s.data.startswith(b"SIP/2.0")]
    assert [(s.transport, s.address) for s in forwarded] == [("tls", address_of(GW_TLS))]
    request = request_of(forwarded[0])
    assert (request.headers.first_value("via") or "").startswith("SIP/2.0/TLS 10.0.0.1:5061;")


def test_a_sips_request_without_a_tls_listener_is_refused() -> None:
    proxy, _ = make_proxy((GW_TLS,))  # listeners: udp and tcp only
    sends = proxy.receive(_sips_invite(), CALLER, "udp", 0.0)
    assert _finals(sends) == [(STATUS, REASON)]


def test_a_sip_request_may_still_go_over_udp() -> None:
    proxy, _ = make_proxy((GW1, GW_TLS), local=LOCAL)
    sends = proxy.receive(invite(), CALLER, "tls", 0.0)
    assert [(s.transport, s.address) for s in sends if not s.data.startswith(b"SIP/2.0")] == [
        ("udp", address_of(GW1))
    ]


def test_a_tls_caller_is_record_routed_to_the_tls_port_with_transport_tls() -> None:
    proxy, _ = make_proxy((GW1,), local=LOCAL)
    sends = proxy.receive(invite(), CALLER, "tls", 0.0)
    (forwarded,) = [s for s in sends if not s.data.startswith(b"SIP/2.0")]
    # to a UDP gateway: two routes (RFC 5658), the gateway's UDP one on top, the caller's
    # (the TLS port, transport=tls) below
    gateway_side, caller_side = request_of(forwarded).headers.values("record-route")
    assert gateway_side.startswith(f"<sip:{PROXY[0]}:{PROXY[1]};lr;")
    assert caller_side.startswith(f"<sip:{PROXY[0]}:{TLS_PORT};transport=tls;lr;")
    udp, _ = make_proxy((GW1,), local=LOCAL)
    (plain,) = [
        s for s in udp.receive(invite(), CALLER, "udp", 0.0) if not s.data.startswith(b"SIP/2.0")
    ]
    assert (request_of(plain).headers.first_value("record-route") or "").startswith(
        f"<sip:{PROXY[0]}:{PROXY[1]};lr;"
    )
