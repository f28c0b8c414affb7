"""CPU cost of the sans-I/O proxy core per call, without sockets.

Replays the benchmark call flow (INVITE, 100, 180, 200, ACK, BYE, 200: 13 datagrams through the
proxy counting its own 100 Trying) through ``Proxy.receive`` and prints microseconds per call.
Use it to compare changes to the hot path; ``--profile`` prints where the time goes.

    .venv/bin/python bench/core_calls.py [--calls N] [--profile] [--no-request-policy]
                                         [--no-protections]

That is the pure Python development install. The production build, with the hot path compiled
by mypyc (setup.py), runs the same script from the virtualenv ``hack/build-native`` makes:

    hack/build-native && .venv-native/bin/python bench/core_calls.py

To compare two commits, build each from a clean checkout of it (``NATIVE_VENV=<dir>
hack/build-native``) and run them in turn, a few times each: the machine's noise is a few %.
Timings on a busy machine move by more than a small change costs; instruction counts do not:

    PYTHONHASHSEED=0 valgrind --tool=callgrind .venv-native/bin/python bench/core_calls.py \
        --calls 2000 [--no-protections]

run with and without the flag (about a minute each), and ``callgrind_annotate --inclusive=yes``
says which functions the difference lies in.

``--routes N`` selects through the proxy's own engine and a real table of two sets instead of
a stub, with N routes (0 to 5) in front of it: the last one takes the calls, the others are
tried and passed over (source CIDRs, a method, a header, a Request-URI host and user), so
``--routes 0`` and ``--routes 5``, run in turn, give what routing costs per call.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from sipdispatch.dispatch import configfile
from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable
from sipdispatch.proxy.core import CoreSettings, Hop, Proxy, RequestSelection, Selection, Signer
from sipdispatch.proxy.core.dialogs import destination_id
from sipdispatch.proxy.settings import ProxySettings
from sipdispatch.sip import codec
from sipdispatch.sip.message import Request, Response

PROXY = ("127.0.0.1", 5060)
CALLER = ("127.0.0.1", 5061)
GATEWAYS = [
    Hop("127.0.0.2", 5060, "udp", DestinationKey.parse(1, "sip:127.0.0.2:5060")),
    Hop("127.0.0.3", 5060, "udp", DestinationKey.parse(1, "sip:127.0.0.3:5060")),
]

INVITE = (
    "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\n"
    "To: service <sip:service@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:5061\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _reply(request: Request, status: int, reason: str) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    for key, name, value in request.headers:
        if key in ("via", "from", "call-id", "cseq", "record-route"):
            lines.append(f"{name}: {value}")
        elif key == "to":
            lines.append(f"{name}: {value};tag=gw" if status > 100 else f"{name}: {value}")
    lines += ["Contact: <sip:gw@127.0.0.2:5060>", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def one_call(proxy: Proxy, n: int, now: float) -> int:
    """Drive one call; returns how many datagrams the proxy received."""
    sends = proxy.receive(INVITE.format(n=n).encode(), CALLER, "udp", now).sends
    invite = codec.parse(sends[-1].data)
    assert isinstance(invite, Request)
    gateway = sends[-1].address
    proxy.receive(_reply(invite, 180, "Ringing"), gateway, "udp", now)
    ok = proxy.receive(_reply(invite, 200, "OK"), gateway, "udp", now).sends
    answer = codec.parse(ok[0].data)
    assert isinstance(answer, Response)
    route = answer.headers.get("record-route")
    dialog = (
        f"Route: {route}\r\nFrom: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\n"
        f"To: service <sip:service@127.0.0.1:5060>;tag=gw\r\nCall-ID: {n}-1@127.0.0.1\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    ack = (
        f"ACK sip:gw@127.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-2\r\nCSeq: 1 ACK\r\n" + dialog
    )
    proxy.receive(ack.encode(), CALLER, "udp", now)
    bye = (
        f"BYE sip:gw@127.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-3\r\nCSeq: 2 BYE\r\n" + dialog
    )
    forwarded = proxy.receive(bye.encode(), CALLER, "udp", now).sends
    bye_out = codec.parse(forwarded[0].data)
    assert isinstance(bye_out, Request)
    proxy.receive(_reply(bye_out, 200, "OK"), gateway, "udp", now)
    return 6


TABLE = """
sets:
  - id: 1
    destinations: [{uri: "sip:127.0.0.2:5060"}, {uri: "sip:127.0.0.3:5060"}]
  - id: 2
    destinations: [{uri: "sip:127.0.0.4:5060"}, {uri: "sip:127.0.0.5:5060"}]
"""
ROUTES = [
    "{name: no-register, match: {methods: [REGISTER]}, reject: {code: 403}}",
    '{name: asterisk-out, match: {source: ["set:1"]}, set: 2}',
    '{name: tenant, match: {source: ["10.0.0.0/8"], header: {name: X-Org, regex: "^a"}}, set: 2}',
    '{name: by-host, match: {source: ["192.0.2.0/24"], requestHost: sip.example.com}, set: 2}',
    '{name: carriers-in, match: {source: ["127.0.0.0/24"], requestUser: "^serv"}, set: 1}',
]


def engine_proxy(routes: int, settings: CoreSettings) -> Proxy:
    """The core behind the engine's own selection, over a table with ``routes`` routes."""
    from sipdispatch.proxy.engine import Engine  # noqa: PLC0415 (only this mode needs it)

    chosen = ROUTES[len(ROUTES) - routes :] if routes else []
    text = TABLE + ("routes:\n" + "".join(f"  - {r}\n" for r in chosen) if chosen else "")
    config = configfile.parse_config(text, "bench.yaml")
    table = DestinationTable.build(config.to_table_config(), None, 0.0)
    return Engine(settings, table, Signer(b"k" * 32)).core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--routes", type=int, choices=range(len(ROUTES) + 1), default=None)
    parser.add_argument(
        "--no-request-policy",
        dest="request_policy",
        action="store_false",
        help="the core without its request policy (by default: the proxy's default policy)",
    )
    parser.add_argument(
        "--no-protections",
        dest="protections",
        action="store_false",
        help="the core without its request policy, per-source rates or transaction cap: the "
        "core's side of the bench's 'protections off' variant",
    )
    args = parser.parse_args()
    counter = iter(range(10**9))

    def select(_: RequestSelection) -> Selection:
        i = next(counter)
        return Selection([GATEWAYS[i % 2], GATEWAYS[(i + 1) % 2]])

    if args.protections:
        settings = ProxySettings(request_policy=args.request_policy)
    else:
        settings = ProxySettings(
            request_policy=False, source_rate=0, dialog_rate=0, max_transactions=0
        )
    local = {"udp": PROXY}
    policy = settings.request_policy_for(local, PROXY)
    core = CoreSettings(local=local, advertise=PROXY, policy=policy, admission=settings.admission())
    if args.routes is None:
        proxy = Proxy(core, select, Signer(b"k" * 32))
        # The engine sets this from its table: signed routes lead only to the table's gateways.
        proxy.destinations = frozenset(
            destination_id(h.host, h.port, h.transport) for h in GATEWAYS
        )
    else:
        proxy = engine_proxy(args.routes, core)
    # The replies above are built by parsing what the proxy sent: subtract that cost.
    overhead = _parse_cost(args.calls // 10)
    profiler = cProfile.Profile() if args.profile else None
    start = time.process_time()
    if profiler:
        profiler.enable()
    for n in range(args.calls):
        one_call(proxy, n, n * 0.001)
        if n % 1000 == 999:
            proxy.on_timer(n * 0.001)
    if profiler:
        profiler.disable()
    elapsed = time.process_time() - start
    per_call = elapsed / args.calls * 1e6 - overhead
    print(
        f"{args.calls} calls: {per_call:.1f} us of proxy CPU per call "
        f"({1e6 / per_call:.0f} calls/s per core, core only; harness parsing removed)"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def _parse_cost(calls: int) -> float:
    sample = INVITE.format(n=1).encode()
    start = time.process_time()
    for _ in range(calls * 3):
        codec.parse(sample)
    return (time.process_time() - start) / calls * 1e6


if __name__ == "__main__":
    main()
