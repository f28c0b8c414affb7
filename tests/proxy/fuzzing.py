"""Fuzzing the codec and the proxy core: what a hostile peer can send, and what must hold.

Messages are made by mutating real ones (the RFC 4475/5118 torture corpus, the calls of the
core tests, gateway replies to what the proxy really forwarded, in-dialog requests carrying
its real signed Route) with the edits that broke SIP parsers before: Unicode digits, control
characters, empty list elements, bare magic cookies, numbers out of range, bytes that are not
UTF-8, lines duplicated, inserted or cut. Each property says that nothing raises, that every
request is answered or forwarded, and that every refused message is counted.

``test_fuzz.py`` runs each property a few hundred times in the normal test suite. The long run
(``hack/fuzz``, documented in docs/development.md) calls this module, which runs the same
properties for a given time and prints how many examples ran and what was found:

    .venv/bin/python tests/proxy/fuzzing.py --seconds 600
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

if __name__ == "__main__":  # run as a script: the test helpers it shares are beside it
    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from coreharness import CALLER, GW1, CoreDriver, address_of, invite, make_proxy, reply, request_of

from corpus import MESSAGES
from sipdispatch.proxy.events import MessageRejected
from sipdispatch.sip import codec
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.limits import MessageLimits
from sipdispatch.sip.message import Request

#: fragments that broke SIP parsers before, as bytes (some are not UTF-8)
NASTY = [
    b"",
    b" ",
    b"\t",
    b",",
    b",,",
    b";",
    b"=",
    b"<",
    b">",
    b'"',
    b"\\",
    b"[",
    b"]",
    b":",
    b"\xc2\xb2",  # superscript two
    b"\xd9\xa3",  # Arabic-Indic three
    b"\xef\xbc\x95",  # fullwidth five
    b"\x1d",
    b"\x00",
    b"\r",
    b"\n",
    b"\xff",
    b"\xed\xb3\xbf",  # a lone surrogate, encoded
    b"%00",
    b"0",
    b"-1",
    b"65536",
    b"4294967296",
    b"99999999999",
    b"z9hG4bK",
    b"z9hG4bKsd",
    b"z9hG4bKsdS",
    b"z9hG4bKsdS.",
    b"z9hG4bKsdT1.",
    b"z9hG4bKsdP",
    b"sip:",
    b"sips:",
    b"tel:",
    b"sip:[::1",
    b"<sip:10.0.0.1;lr>",
    b"<sip:10.0.0.1;lr>,",
    b"SIP/2.0/UDP",
    b"SIP/2.0/TCP 10.0.0.1:0",
    b";branch=",
    b";rport=\xc2\xb2",
    b";received=",
    b";tag=",
    b";lr;ftag=;did=;sig=",
    b"did=1.2.3.4~\xc2\xb2~udp",
]
#: header names worth inserting: those the proxy reads (long and compact forms)
NAMES = [
    b"Via",
    b"v",
    b"Route",
    b"Record-Route",
    b"Content-Length",
    b"l",
    b"Max-Forwards",
    b"Expires",
    b"Contact",
    b"m",
    b"CSeq",
    b"Call-ID",
    b"i",
    b"From",
    b"f",
    b"To",
    b"t",
    b"Proxy-Require",
    b"Retry-After",
]

fragments = st.one_of(
    st.sampled_from(NASTY),
    st.binary(max_size=12),
    st.lists(st.sampled_from(NASTY), min_size=2, max_size=4).map(b"".join),
)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with up to five edits of its header lines or bytes."""
    end = seed.find(b"\r\n\r\n")
    head, body = (seed, b"") if end < 0 else (seed[:end], seed[end + 4 :])
    lines = head.split(b"\r\n")
    for _ in range(draw(st.integers(0, 5))):
        edit = draw(st.integers(0, 6))
        at = draw(st.integers(0, len(lines)))
        line = lines[at] if at < len(lines) else b""
        name, colon, value = line.partition(b":")
        if edit == 0 and colon:  # the value replaced
            lines[at] = name + b": " + draw(fragments)
        elif edit == 1:  # a header inserted
            lines.insert(at, draw(st.sampled_from(NAMES)) + b": " + draw(fragments))
        elif edit == 2 and colon:  # a piece of the value replaced
            cut = draw(st.integers(0, len(value)))
            span = draw(st.integers(0, 4))
            value = value[:cut] + draw(fragments) + value[cut + span :]
            lines[at] = name + colon + value
        elif edit == 3 and at < len(lines):  # a line duplicated, or cut
            if draw(st.booleans()):
                lines.insert(at, line)
            else:
                del lines[at]
        elif edit == 4 and at < len(lines):  # a digit made Unicode
            digits = [i for i, c in enumerate(line) if 0x30 <= c <= 0x39]
            if digits:
                i = draw(st.sampled_from(digits))
                lines[at] = line[:i] + draw(st.sampled_from(NASTY[14:17])) + line[i + 1 :]
        elif edit == 5:  # raw bytes anywhere in the line
            cut = draw(st.integers(0, len(line)))
            lines.insert(at, line[:cut] + draw(fragments) + line[cut:])
            if at + 1 < len(lines):
                del lines[at + 1]
        elif edit == 6:  # the body changed
            body = draw(st.binary(max_size=40))
    if draw(st.booleans()):  # the Content-Length kept true, so the message goes deeper
        lines = [
            b"Content-Length: " + str(len(body)).encode()
            if ln.partition(b":")[0].strip().lower() in (b"content-length", b"l")
            else ln
            for ln in lines
        ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SEEDS = [m.data for m in MESSAGES] + [
    invite(),
    invite(extra="Route: <sip:10.0.0.1;lr>\r\nExpires: 60\r\n"),
    invite().replace(b"INVITE", b"OPTIONS").replace(b"service@", b""),
    invite().replace(b"INVITE", b"CANCEL"),
    invite().replace(b"INVITE", b"ACK"),
    invite().replace(b"INVITE", b"REGISTER"),
]

# ------------------------------------------------------------------ what must hold


def check_codec(data: bytes, datagram: bool) -> None:
    """The codec raises only ``RemoteProtocolError``; what it parses, it can write again."""
    try:
        message = codec.parse(data, datagram=datagram, limits=MessageLimits())
    except RemoteProtocolError:
        return
    message.to_bytes()


def check_framer(data: bytes, chunk: int) -> None:
    framer = codec.StreamFramer(MessageLimits().max_message_size)
    try:
        for i in range(0, len(data), chunk):
            for message in framer.feed(data[i : i + chunk]):
                check_codec(message, datagram=False)
    except RemoteProtocolError:
        return


def _drain(proxy: CoreDriver) -> None:
    """Every timer, until nothing is pending (bounded: a leak must not hang the run)."""
    for _ in range(1000):
        deadline = proxy.next_deadline()
        if deadline is None:
            return
        proxy.on_timer(deadline)
    raise AssertionError("timers never settle")


def check_core(proxy: CoreDriver, data: bytes, source: tuple[str, int], transport: str) -> None:
    """The core never raises; a request is answered or forwarded; what it refuses it counts."""
    sends = proxy.receive(data, source, transport, 1.0)
    rejected = [e for e in proxy.last if isinstance(e, MessageRejected)]
    try:
        message = codec.parse(data, datagram=transport == "udp", limits=MessageLimits())
    except RemoteProtocolError:
        if not codec.is_keepalive(data):
            assert rejected, "a message that does not parse must be counted"
    else:
        if isinstance(message, Request) and message.method != "ACK" and not rejected:
            assert sends, f"a {message.method} got neither an answer nor a forward"
    _drain(proxy)


#: made once: every example must start from the same bytes, or the draws would differ
_CONVERSATION_INVITE = invite("fuzz@caller", branch="z9hG4bK-fuzz")


def forwarded_invite() -> tuple[CoreDriver, Request]:
    """A proxy with one INVITE forwarded to GW1, and that request as sent."""
    proxy, _ = make_proxy()
    sends = proxy.receive(_CONVERSATION_INVITE, CALLER, "udp", 0.0)
    out = [s for s in sends if s.address == address_of(GW1)]
    return proxy, request_of(out[0])


def in_dialog(forwarded: Request, method: str) -> bytes:
    """A request in the dialog ``forwarded`` set up, from the caller, along its Route."""
    route = forwarded.headers.get("record-route") or ""
    lines = [
        f"{method} sip:service@{GW1.host}:{GW1.port} SIP/2.0",
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-d{method}",
        f"Route: {route}",
        "Max-Forwards: 70",
        f"From: {forwarded.headers.get('from')}",
        f"To: {forwarded.headers.get('to')};tag=gw1",
        f"Call-ID: {forwarded.call_id}",
        f"CSeq: 2 {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------------------ the properties

CORE_SEEDS = st.sampled_from(SEEDS).flatmap(mutated)


def fuzz_codec(data: bytes, datagram: bool) -> None:
    check_codec(data, datagram)


def fuzz_framer(data: bytes, chunk: int) -> None:
    check_framer(data + data, chunk)


def fuzz_new_message(data: bytes, transport: str) -> None:
    proxy, _ = make_proxy()
    check_core(proxy, data, CALLER, transport)


def fuzz_conversation(data: st.DataObject) -> None:
    """Replies from the gateway and in-dialog requests, built on what the proxy really sent
    (its branch, its signed Record-Route), then mutated."""
    proxy, forwarded = forwarded_invite()
    if data.draw(st.booleans()):
        status = data.draw(st.sampled_from([100, 180, 200, 404, 486, 503]))
        seed = reply(forwarded, status)
        source = address_of(GW1)
    else:
        seed = in_dialog(forwarded, data.draw(st.sampled_from(["BYE", "ACK", "INVITE", "INFO"])))
        source = CALLER
    check_core(proxy, data.draw(mutated(seed)), source, "udp")


#: each property: what it checks, and the strategies of its arguments
PROPERTIES: dict[str, tuple[Callable[..., None], tuple[st.SearchStrategy[Any], ...]]] = {
    "codec": (fuzz_codec, (CORE_SEEDS, st.booleans())),
    "framer": (fuzz_framer, (CORE_SEEDS, st.integers(1, 200))),
    "new-message": (fuzz_new_message, (CORE_SEEDS, st.sampled_from(["udp", "tcp"]))),
    "conversation": (fuzz_conversation, (st.data(),)),
}


def fuzz_test(
    name: str, examples: int, on_example: Callable[[], None] | None = None
) -> Callable[[], None]:
    """Property ``name`` as a hypothesis test of ``examples`` examples."""
    body, strategies = PROPERTIES[name]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )
    @given(st.tuples(*strategies))
    def run(arguments: tuple[Any, ...]) -> None:
        if on_example is not None:
            on_example()
        body(*arguments)

    return run  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description="Fuzz the SIP codec and the proxy core.")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--batch", type=int, default=2000, help="examples per property run")
    args = parser.parse_args()
    counts = dict.fromkeys(PROPERTIES, 0)
    findings: list[str] = []
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        for name in PROPERTIES:
            if time.monotonic() >= deadline:
                break

            def count(name: str = name) -> None:
                counts[name] += 1

            try:
                fuzz_test(name, args.batch, count)()
            except Exception as exc:  # a finding: kept, reported, and the run goes on
                findings.append(f"{name}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    print(f"fuzzed for {elapsed:.0f} s: {total} examples ({total / elapsed:.0f}/s)")
    for name, count in counts.items():
        print(f"  {name}: {count} examples")
    print(f"findings: {len(findings)}")
    for finding in findings:
        print(f"  {finding}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
