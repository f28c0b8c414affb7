"""Parsers for the header values a proxy must understand: Via, name-addr lists, CSeq.

Everything else is forwarded as opaque text. The scanners are written by hand because the SIP
grammar (quoted strings with escapes, commas inside ``<>``, LWS almost anywhere) is beyond one
regular expression, and no maintained Python library parses SIP header values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sipdispatch.sip import grammar
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.memo import remember
from sipdispatch.sip.uri import SipUri, parse_host_port, parse_uri

__all__ = [
    "MAGIC_COOKIE",
    "CSeq",
    "NameAddr",
    "Via",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addrs",
    "parse_params",
    "parse_via",
    "parse_vias",
    "prime_name_addr",
    "split_first",
    "split_values",
    "via_compared_form",
]

MAGIC_COOKIE: Final = "z9hG4bK"
_LWS: Final = grammar.WSP
_MAX_CSEQ: Final = 2**32 - 1  # RFC 3261 8.1.1.5: the sequence number is a 32-bit unsigned integer


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and ``<>``.

    An empty element (``a,,b``) is a syntax error for every list header we split.
    """
    if "," not in value:
        return [value.strip()]
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    if any(not p for p in parts):
        raise RemoteProtocolError(f"empty element in list {value!r}")
    return parts


def split_first(value: str) -> tuple[str, str | None]:
    """The first element of a comma-separated list and the raw rest (None when it is the only
    one). Cheap when the first element has no quotes or ``<>``, which is every Via."""
    comma = value.find(",")
    if comma < 0:
        return value.strip(), None
    head = value[:comma]
    if '"' not in head and "<" not in head:
        first = head.strip()
        if not first:
            raise RemoteProtocolError(f"empty element in list {value!r}")
        return first, value[comma + 1 :].strip()
    parts = split_values(value)
    return parts[0], ", ".join(parts[1:]) if len(parts) > 1 else None


def _read_quoted(text: str, start: int) -> int:
    """Index just past the quoted-string opening at ``start``; raise if it never closes."""
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise RemoteProtocolError(f"unterminated quoted string in {text!r}")


def parse_params(text: str) -> dict[str, str]:
    """Parse ``*( SEMI generic-param )``; names are lowercased, flags map to ``""``."""
    tokens = TOKEN_PARAMS(text)  # the common form (";tag=a1b2"), in C in the compiled build
    return tokens if tokens is not None else _parse_generic_params(text)


def _parse_generic_params(text: str) -> dict[str, str]:
    """``parse_params`` for any form: blanks, quoted values, IPv6 references."""
    params: dict[str, str] = {}
    rest = text.strip(_LWS)
    while rest:
        if rest[0] != ";":
            raise RemoteProtocolError(f"expected ';' in parameters {text!r}")
        rest = rest[1:].lstrip(_LWS)
        name_match = grammar.PARAM_NAME.match(rest)
        if not name_match:
            raise RemoteProtocolError(f"empty parameter in {text!r}")
        name = name_match.group().lower()
        rest = rest[name_match.end() :].lstrip(_LWS)
        value = ""
        if rest.startswith("="):
            rest = rest[1:].lstrip(_LWS)
            if rest.startswith('"'):
                end = _read_quoted(rest, 0)
                value, rest = rest[:end], rest[end:]
            else:
                value_match = grammar.GEN_VALUE.match(rest)
                if not value_match:
                    raise RemoteProtocolError(f"bad value of parameter {name!r} in {text!r}")
                value, rest = value_match.group(), rest[value_match.end() :]
            rest = rest.lstrip(_LWS)
        params[name] = value
    return params


# Records made for every message are dataclasses with a hand-written __init__, not frozen:
# mypyc runs a frozen dataclass's generated __init__ interpreted (about 440 ns a record
# against 85 ns compiled). Treat them as immutable all the same.
@dataclass(slots=True, init=False, unsafe_hash=True)
class Via:
    """One Via value: ``SIP/2.0/<transport> host[:port];params``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str]

    def __init__(self, transport: str, host: str, port: int | None, params: dict[str, str]) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def is_rfc3261(self) -> bool:
        """True when the branch has the magic cookie (and something after it)."""
        branch = self.params.get("branch")
        return (
            branch is not None
            and len(branch) > len(MAGIC_COOKIE)
            and branch.startswith(MAGIC_COOKIE)
        )


#: a Via's sent-protocol and sent-by, read already: a peer writes the same ones every time
_SENT: Final[dict[str, tuple[str, str, int | None]]] = {}


def _token_params(text: str) -> dict[str, str] | None:
    """``*( ";" token [ "=" token ] )`` as {name lowered: value}, or None for anything else.
    The reference of ``sip/_tokens.c``'s ``params``, which the compiled build runs instead."""
    if text and not grammar.VIA_PARAMS.fullmatch(text):
        return None
    params: dict[str, str] = {}
    for item in text[1:].split(";") if text else ():
        name, _, param_value = item.partition("=")
        params[name.lower()] = param_value
    return params


def _via_compared_form(via: str) -> str:
    """The reference of ``via_compared_form`` (and of ``sip/_tokens.c``'s ``compared_via``)."""
    head, _, rest = via.partition(";")
    sent = "".join(head.split()).upper()
    if not rest:
        return sent
    params = []
    for param in rest.split(";"):
        name, equals, value = param.partition("=")
        params.append(f"{name.strip().lower()}{equals}{value.strip()}")
    params.sort()
    return sent + ";" + ";".join(params)


def _load_tokens() -> tuple[Callable[[str], dict[str, str] | None], Callable[[str], str | None]]:
    """``sip/_tokens.c``'s readers, built with the compiled hot path; else their references."""
    try:
        from sipdispatch.sip import _tokens  # noqa: PLC0415 - optional, native builds only
    except ImportError:
        return (_token_params, _via_compared_form)
    return (_tokens.params, _tokens.compared_via)


_TOKENS: Final = _load_tokens()
#: the Via parameters' reader: hand-written C in the compiled build, else ``_token_params``
TOKEN_PARAMS: Final = _TOKENS[0]
#: ``via_compared_form`` in C in the compiled build (None for text it leaves to the reference)
_COMPARED_VIA: Final = _TOKENS[1]


def via_compared_form(via: str) -> str:
    """A Via value as RFC 3261 (20.42) compares it: its meaning, not its spelling.

    A response carries the request's Via values equal by those rules, not byte for byte:
    Asterisk's PJSIP, for one, writes ``rport=5060;branch=...`` back for a Via that said
    ``branch=...;rport=5060``. So the sent-protocol and sent-by are kept without case or
    blanks, and the parameters with their names lowered, stripped, in sorted order. Split by
    hand, not parsed: a proxy's branch signatures cover this form of every forwarded request's
    Via, and a full parse cost about 8 % per call.
    """
    form = _COMPARED_VIA(via)
    return form if form is not None else _via_compared_form(via)


def parse_via(value: str) -> Via:
    """Parse one Via value (LWS around ``/`` is legal, RFC 4475 wsinv)."""
    semi = value.find(";")
    head, params_text = (value, "") if semi < 0 else (value[:semi], value[semi:])
    sent = _SENT.get(head)
    if sent is None:
        simple = grammar.VIA_FAST.fullmatch(value)
        if simple is None or (simple.group(3) is not None and int(simple.group(3)) > 65535):
            return _parse_via(value)
        transport, host, port = simple.group(1, 2, 3)
        sent = remember(_SENT, head, (transport.upper(), host, int(port) if port else None))
    params = TOKEN_PARAMS(params_text)
    if params is None:
        return _parse_via(value)  # quoted values, blanks, IPv6 received=...
    return Via(sent[0], sent[1], sent[2], params)


def _parse_via(value: str) -> Via:
    """The general Via grammar, for what the fast path of ``parse_via`` does not take."""
    match = grammar.SENT_PROTOCOL.match(value.strip(_LWS))
    if not match:
        raise RemoteProtocolError(f"bad Via {value!r}")
    rest = value.strip(_LWS)[match.end() :].lstrip(_LWS)
    semi = rest.find(";")
    sent_by, params_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    sent_by = grammar.COLON.sub(":", sent_by.strip(_LWS))
    if not sent_by:
        raise RemoteProtocolError(f"Via without sent-by: {value!r}")
    host, port = parse_host_port(sent_by, "Via sent-by")
    return Via(match.group(1).upper(), host, port, parse_params(params_text))


def parse_vias(value: str) -> list[Via]:
    return [parse_via(v) for v in split_values(value)]


@dataclass(slots=True, init=False, unsafe_hash=True)
class NameAddr:
    """``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)``."""

    display: str | None
    uri: SipUri | str
    params: dict[str, str]
    #: the URI as written (between ``<>`` or bare), for forwarding unchanged
    uri_text: str

    def __init__(
        self, display: str | None, uri: SipUri | str, params: dict[str, str], uri_text: str
    ) -> None:
        self.display = display
        self.uri = uri
        self.params = params
        self.uri_text = uri_text

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


#: unquoted display names checked already ("" for none), by the text before ``<``: a From
#: with a new tag each call is parsed afresh, its caller's name is not
_TOKEN_DISPLAYS: Final[dict[str, str]] = {}

#: name-addrs parsed already: a dialog's Routes, a trunk's Contact and To recur
_NAME_ADDRS: Final[dict[str, NameAddr]] = {}


def parse_name_addr(value: str) -> NameAddr:
    """Parse To, From, Contact, Route or Record-Route values (RFC 3261 20.10, 20.20)."""
    known = _NAME_ADDRS.get(value)
    if known is not None:
        return known
    return remember(_NAME_ADDRS, value, _parse_name_addr(value))


def _parse_name_addr(value: str) -> NameAddr:
    """Parse one name-addr.

    Rejects what RFC 4475 calls malformed: unbalanced quotes (quotbal), spaces inside ``<>``
    (badaspec), unquoted non-token display names (baddn), a bare URI with ``?headers``
    (regbadct). Accepts a token display name glued to ``<`` (lwsdisp).
    """
    text = value.strip(_LWS)
    display: str | None = None
    if text.startswith('"'):
        end = _read_quoted(text, 0)
        display = text[:end]
        text = text[end:].lstrip(_LWS)
        if not text.startswith("<"):
            raise RemoteProtocolError(f"quoted display name without <URI>: {value!r}")
    elif "<" in text:
        before, _, _ = text.partition("<")
        known = _TOKEN_DISPLAYS.get(before)
        if known is None:
            words = before.split()
            if any(not grammar.TOKEN.fullmatch(w) for w in words):
                raise RemoteProtocolError(f"display name must be tokens or quoted: {value!r}")
            known = remember(_TOKEN_DISPLAYS, before, " ".join(words))
        display = known or None
        text = text[len(before) :]
    if text.startswith("<"):
        close = text.find(">")
        if close < 0:
            raise RemoteProtocolError(f"unclosed '<' in {value!r}")
        uri_text = text[1:close]
        params_text = text[close + 1 :]
        uri = parse_uri(uri_text)
    else:
        semi = text.find(";")
        uri_text, params_text = (text, "") if semi < 0 else (text[:semi], text[semi:])
        uri_text = uri_text.rstrip(_LWS)
        if "?" in uri_text or "," in uri_text:
            raise RemoteProtocolError(f"URI with '?' or ',' must be inside <>: {value!r}")
        uri = parse_uri(uri_text)
    return NameAddr(display, uri, parse_params(params_text), uri_text)


def prime_name_addr(value: str, parsed: NameAddr) -> None:
    """Record ``parsed`` as what ``value`` parses to, without parsing it: for a value this
    process wrote itself from parts it knows (its own Record-Route), which the caller vouches
    parses so (a test holds it to that)."""
    remember(_NAME_ADDRS, value, parsed)


def parse_name_addrs(value: str) -> list[NameAddr]:
    return [parse_name_addr(v) for v in split_values(value)]


@dataclass(slots=True, init=False, unsafe_hash=True)
class CSeq:
    number: int
    method: str

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method


#: CSeq values parsed already: "1 INVITE", "2 BYE"... recur in every call
_CSEQS: Final[dict[str, CSeq]] = {}


def parse_cseq(value: str) -> CSeq:
    """``1*DIGIT LWS Method``; the number must fit in 32 bits (RFC 4475 scalar02)."""
    known = _CSEQS.get(value)
    if known is not None:
        return known
    return remember(_CSEQS, value, _parse_cseq(value))


def _parse_cseq(value: str) -> CSeq:
    match = grammar.CSEQ.fullmatch(value.strip(_LWS))
    if not match:
        raise RemoteProtocolError(f"bad CSeq {value!r}")
    number = int(match.group(1))
    if number > _MAX_CSEQ:
        raise RemoteProtocolError(f"CSeq number out of range: {value!r}")
    return CSeq(number, match.group(2))
