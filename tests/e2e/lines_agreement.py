"""The compiled build's C code against its Python references: the loop over header lines
(``sip/_lines.c``) against ``codec._parse_headers``, the count of a header section's bytes
against ``codec._measure_text``, the Via parameters' reader (``sip/_tokens.c``) against
``values._token_params``, a Via's compared form against ``values._via_compared_form``, the
search for a header section's end against ``codec._head_end``, and the writing of a message's
bytes against ``Headers._encoded``.

Run by the compiled build's Python (``hack/build-native``), where both exist:

    .venv-native/bin/python tests/e2e/lines_agreement.py [CASES]

Every RFC 4475 / RFC 5118 torture message, then CASES generated header sections (folded lines,
bare CRs and LFs, blanks around colons, names the grammar refuses, lines without a colon, long
lines, Latin-1 and bytes that are not UTF-8, CRLF and bare-LF framing), and enough distinct lines
and names to fill the C memos several times over. For each, both must build the same fields,
index and lines, or raise the same error; the C loop may instead decline (None) a section with
a folded line or characters over one byte, which the Python loop then reads. Each section's
line ends, commas and control bytes must be counted alike, Via parameters read alike
(or refused alike), Vias put in the same compared form (or left to the reference: text that
is not ASCII, or has over 64 parameters), the end of every message's header section found
at the same place, and every section read, then edited as a proxy edits (Via pushed and popped,
fields set, appended, removed, Content-Length among them), written out byte for byte alike (or
left to the Python code: text that is not ASCII). Prints what it checked; exits 1 at the first
disagreement.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import MESSAGES
from sipdispatch.sip import _lines, _tokens, codec, values
from sipdispatch.sip.message import Headers

EDITS = random.Random(3261)  # the edits made to each section before it is written out

NAMES = ["Via", "v", "To", "t", "From", "Call-ID", "CSeq", "Contact", "X-Custom", "Route",
         "record-route", "Max-Forwards", "Content-Length", "l", "User-Agent", "Bad Name",
         "Bad\x01", "", "x" * 70, "Via ", "To\t"]  # fmt: skip
VALUES = ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "<sip:a@b>;tag=1", "70", "",
          " spaced ", "\tTabbed\t", "a, b, c", "caf\u00e9", "\udcff\udcfe", "x" * 300,
          "1 INVITE", "with\rCR", "with:colon", "ctl\x01\x7f", "nul\x00", "\r",
          "a,\r\n,b"]  # fmt: skip


def reference(text: str, start: int, separator: str) -> object:
    try:
        headers = codec._parse_headers(text[start:].split(separator))
    except Exception as exc:  # the error is part of what must agree
        return ("raised", type(exc).__name__, str(exc))
    return (headers._items, headers._first, headers._repeated, headers._lines)


def compiled(text: str, start: int, separator: str) -> object:
    try:
        parts = _lines.scan(text, start, separator, codec._parse_line)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))
    return parts if parts is None else tuple(parts)


def declines(text: str, start: int, separator: str) -> bool:
    """Whether the C loop may leave this section to the Python one."""
    folded = any(line[:1] in (" ", "\t") for line in text[start:].split(separator))
    return folded or any(ord(c) > 255 for c in text)


OUTCOMES = {"same fields": 0, "same error": 0, "declined": 0, "same counts": 0,
            "same parameters": 0, "same refusal": 0, "same compared form": 0,
            "form left to Python": 0, "same head end": 0, "same bytes": 0,
            "bytes left to Python": 0}  # fmt: skip


def check_measures(text: str, what: str) -> None:
    head = text.encode("utf-8", "surrogateescape")
    for controls in (True, False):
        got = _lines.measure(head, controls)
        want = codec._measure_text(head, head.decode("utf-8", "surrogateescape"), controls)
        if got != want:
            break
    if got != want:
        print(f"DISAGREE on the counts of {what}: {text[:200]!r}\n  C: {got}\n  Python: {want}")
        sys.exit(1)
    OUTCOMES["same counts"] += 1


def check_params(text: str, what: str) -> None:
    got, want = _tokens.params(text), values._token_params(text)
    if got != want:
        print(f"DISAGREE on the parameters of {what}: {text!r}\n  C: {got}\n  Python: {want}")
        sys.exit(1)
    OUTCOMES["same parameters" if got is not None else "same refusal"] += 1


def check_head_end(data: bytes, what: str) -> None:
    got, want = _lines.head_end(data), codec._head_end(data)
    if got != want:
        print(f"DISAGREE on the end of the header section of {what}: {data!r}")
        print(f"  C: {got}\n  Python: {want}")
        sys.exit(1)
    OUTCOMES["same head end"] += 1


def check_compared_form(text: str, what: str) -> None:
    got, want = _tokens.compared_via(text), values._via_compared_form(text)
    if got is None and (not text.isascii() or text.count(";") > 64):
        OUTCOMES["form left to Python"] += 1
        return
    if got != want:
        print(f"DISAGREE on the compared form of {what}: {text!r}")
        print(f"  C: {got!r}\n  Python: {want!r}")
        sys.exit(1)
    OUTCOMES["same compared form"] += 1


def edit(headers: Headers) -> None:
    """A few of the edits a proxy makes, drawn at random."""
    for _ in range(EDITS.randint(0, 4)):
        roll = EDITS.random()
        value = EDITS.choice(VALUES)
        if roll < 0.25:
            headers.push_first("Via", f"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK{EDITS.random()}")
        elif roll < 0.4:
            headers.pop_first(EDITS.choice(["via", "route", "content-length"]))
        elif roll < 0.6:
            headers.set(EDITS.choice(["Max-Forwards", "Content-Length", "X-New"]), value)
        elif roll < 0.8:
            headers.append(EDITS.choice(["Record-Route", "Content-Length", "l"]), value)
        else:
            headers.remove_all(EDITS.choice(["content-length", "to", "x-custom"]))


def check_write(parts: codec._Parts, start_line: str, what: str) -> None:
    items, first, repeated, lines = parts
    headers = Headers(list(items), dict(first), set(repeated), list(lines))
    edit(headers)
    body = EDITS.choice([b"", b"v=0\r\n", b"\xff\x00body"])
    length = str(len(body))
    got = _lines.write(start_line, headers._items, headers._lines, length, body)
    want = headers._encoded(start_line, length, body)
    if got is None and not all(part.isascii() for item in headers._items for part in item):
        OUTCOMES["bytes left to Python"] += 1
        return
    if got != want:
        print(f"DISAGREE on the bytes of {what}:\n  C:      {got!r}\n  Python: {want!r}")
        sys.exit(1)
    OUTCOMES["same bytes"] += 1


def check(text: str, start: int, separator: str, what: str) -> None:
    check_measures(text, what)
    got = compiled(text, start, separator)
    if got is None and declines(text, start, separator):
        OUTCOMES["declined"] += 1
        return
    want = reference(text, start, separator)
    if got == want:
        OUTCOMES["same error" if got and got[0] == "raised" else "same fields"] += 1
        if want[0] != "raised":
            check_write(want, text[: max(start - len(separator), 0)], what)
    else:
        print(f"DISAGREE on {what}: {text[start:][:200]!r}\n  C:      {got!r}\n  Python: {want!r}")
        sys.exit(1)


def section(head: bytes) -> tuple[str, int, str]:
    """What ``codec.parse`` hands the loop: the decoded head, where the fields start, and
    the separator."""
    text = head.decode("utf-8", "surrogateescape")
    separator = "\r\n" if "\r\n" in text else "\n"
    end = text.find(separator)
    return text, len(text) if end < 0 else end + len(separator), separator


def random_line(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.03:
        return ""
    if roll < 0.05:
        return rng.choice([" ", "\t"]) + rng.choice(VALUES)  # folded
    if roll < 0.07:
        return rng.choice(VALUES)  # no name at all
    colon = rng.choice([": ", ":", " : ", ":\t", "::"])
    return rng.choice(NAMES) + colon + rng.choice(VALUES)


def main() -> None:
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    checked = 0
    for message in MESSAGES:
        data = message.data.lstrip(b"\r\n")
        check_head_end(data, f"torture message {message}")
        end = data.find(b"\r\n\r\n")
        head = data[:end] if end >= 0 else data.split(b"\n\n")[0]
        check(*section(head), f"torture message {message}")
        checked += 1
    rng = random.Random(4475)
    for case in range(cases):
        separator = rng.choice(["\r\n", "\n"])
        lines = ["INVITE sip:a@b SIP/2.0"] + [random_line(rng) for _ in range(rng.randint(0, 14))]
        text = separator.join(lines)
        if rng.random() < 0.1:
            text += separator  # a trailing separator: an empty last line
        if rng.random() < 0.05:
            text = "\u0141" + text  # two bytes a character: the C loop declines
        start = text.find(separator)
        check(text, len(text) if start < 0 else start + len(separator), separator, f"case {case}")
        checked += 1
    # Distinct lines and names beyond what the memos hold (2,048 lines, 512 names), then
    # lines seen before: every one must still read as the reference reads it.
    for round_no in range(3):
        for i in range(3000):
            text = (
                f"SIP/2.0 200 OK\r\nX-N{i % 700}: v{round_no}-{i}\r\nVia: SIP/2.0/UDP h;branch={i}"
            )
            check(*section(text.encode()), f"memo round {round_no} line {i}")
            checked += 1
    # Bytes drawn from the ones the counts tell apart (and their neighbours with the high bit
    # set), at every offset of the eight-byte words the C code reads.
    alphabet = b"\r\n,\t\x00\x1f\x7f\x20a\x80\x8a\xff\xad"
    for _ in range(5000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        check_measures(raw.decode("utf-8", "surrogateescape"), f"bytes {raw!r}")
        check_head_end(raw, "bytes")
    for _ in range(5000):  # the four bytes, whole and broken, at every place and alignment
        raw = bytes(rng.choice(b"\r\n\r\nx") for _ in range(rng.randint(0, 24)))
        check_head_end(raw, "bytes")
    # Via parameters: every torture message's Vias, then strings of the characters that
    # make or break the token form.
    vias = [
        line.split(":", 1)[1].strip()
        for message in MESSAGES
        for line in message.data.decode("utf-8", "surrogateescape").splitlines()
        if line.lower().startswith(("via:", "v:"))
    ]
    for via in vias:
        check_params(via[via.find(";") :] if ";" in via else "", f"Via {via!r}")
        check_compared_form(via, f"Via {via!r}")
    pieces = [";", ";", "=", "branch", "BrAnCh", "rport", "z9hG4bK-1.2!%*_+`'~", "0", " ",
              '"q"', ":", "[::1]", "\u00e9", "\u0141", ",", "\t", "\udcff"]  # fmt: skip
    for _ in range(20000):
        check_params("".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))), "params")
    # Compared forms: Vias with the blanks (ASCII and Unicode ones), cases, empty and repeated
    # parameters and "=" placements that str.split and str.strip handle, and over 64 parameters.
    form_pieces = [";", ";", "=", "==", " ", "\t", "\x0b", "\x1c", "\x1f", "SIP/2.0/UDP",
                   "sip / 2.0 / tcp", "h:5060", "[::1]", "Branch", "branch", "z9hG4bK", "RPORT",
                   "rport", "a", "A", "\x7f", "\x00"]  # fmt: skip
    unicode_pieces = ["\x85", "\u3000", "\u00e9", "\u0130", "\udcff"]
    for _ in range(20000):
        pieces = [rng.choice(form_pieces) for _ in range(rng.randint(0, 14))]
        if rng.random() < 0.1:
            pieces.insert(rng.randint(0, len(pieces)), rng.choice(unicode_pieces))
        check_compared_form("".join(pieces), "Via")
    for count in (63, 64, 65, 200):
        check_compared_form("SIP/2.0/UDP h" + "".join(f";p{i}=V" for i in range(count)), "Via")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in OUTCOMES.items())
    print(f"{checked} header sections: the C code and the Python code agree ({counts})")


if __name__ == "__main__":
    main()
