"""RFC 3261 section 25 grammar, as the regular expressions this project needs.

Only the rules that decide whether a message is acceptable, or that the proxy must find inside
a value it otherwise forwards untouched, are here; everything else stays opaque text. Each
pattern names the ABNF rule it stands for. The ``*_CHARS`` strings are character-class bodies
(to go between ``[]``); the compiled patterns are meant for ``fullmatch`` unless their comment
says ``search`` or ``sub``.

Every module of the package that needs a piece of SIP syntax takes it from here, so that one
rule has one spelling: the wire parsers of ``sip/`` (liberal where RFC 4475 asks) and the
stricter destination parser of ``dispatch/`` share the host grammar below.
"""

from __future__ import annotations

import re
from typing import Final

from sipdispatch.sip.memo import remember

__all__ = [
    "COLON",
    "COMPACT_FORMS",
    "CSEQ",
    "DIGEST_USERNAME",
    "GEN_VALUE",
    "HEADER_NAME",
    "HOSTNAME",
    "IPV4ADDRESS",
    "METHOD",
    "PARAM_NAME",
    "PARAM_VALUE",
    "REQUEST_LINE",
    "SCHEME",
    "SENT_PROTOCOL",
    "STATUS_LINE",
    "TAG_PARAM",
    "TOKEN",
    "TOKEN_CHARS",
    "URI_HEADERS",
    "URI_PARAMS",
    "USERINFO",
    "VIA_FAST",
    "VIA_PARAMS",
    "WSP",
    "is_digits",
    "number",
]

# --- basic rules (25.1) ------------------------------------------------------------------

# WSP = SP / HTAB: what LWS is once the codec has unfolded continuation lines.
WSP: Final = " \t"
# COLON = SWS ":" SWS (also HCOLON's inner part): a colon with optional blanks around it.
# Use with sub() to close them up.
COLON: Final = re.compile(r"[ \t]*:[ \t]*")
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS: Final = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN: Final = re.compile(rf"[{TOKEN_CHARS}]+")
# Method = INVITEm / ACKm / ... / extension-method, and extension-method = token
METHOD: Final = TOKEN
# header-name = token (one regex so that "TO :" and "Content-Length   :" are accepted)
HEADER_NAME: Final = TOKEN
# generic-param name = token
PARAM_NAME: Final = TOKEN
# gen-value = token / host / quoted-string, without the quoted-string (read by hand, it has
# escapes). ":" and "[]" let an IPv6 reference through (received=, RFC 5118 4.5).
GEN_VALUE: Final = re.compile(rf"[{TOKEN_CHARS}:\[\]]+")


#: the control characters (CTL, RFC 5234 B.1) but HTAB: a header section holds them only as
#: its line ends (CR LF), and a header value never, quoted-pair or not
CONTROL_BYTES: Final = bytes([*range(9), *range(10, 32), 127])


#: texts read as numbers already: a Content-Length, a status code, a Max-Forwards recur
_NUMBERS: Final[dict[str, int]] = {}


def number(text: str) -> int:
    """``int(text)``, remembered (the same result, and the same error, as ``int``)."""
    known = _NUMBERS.get(text)
    if known is None:
        known = remember(_NUMBERS, text, int(text))
    return known


def is_digits(text: str) -> bool:
    """``1*DIGIT`` with DIGIT = %x30-39: ``str.isdigit`` alone also takes "²" and other
    Unicode digits, which ``int`` then refuses or reads as something else."""
    return text.isascii() and text.isdigit()


# --- start lines (25.1) ------------------------------------------------------------------

# Request-Line = Method SP Request-URI SP SIP-Version CRLF: exactly one SP between elements,
# no LWS inside the URI (RFC 4475 lwsstart, trws, lwsruri).
REQUEST_LINE: Final = re.compile(rf"([{TOKEN_CHARS}]+) ([^ \t]+) ([^ \t]+)")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF; Status-Code = 3DIGIT
STATUS_LINE: Final = re.compile(r"(SIP/[0-9]+\.[0-9]+) ([0-9]{3}) (.*)", re.DOTALL)

# --- URIs (25.1, 19.1) -------------------------------------------------------------------

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# userinfo = ( user / telephone-subscriber ) [ ":" password ] "@", without the "@": the
# characters of user (unreserved / escaped / user-unreserved) and of password, which adds ":".
USERINFO: Final = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:]*")
# hostname = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum. Written as runs of alphanum
# joined by a dot or by hyphens, which is the same language: no empty label, no label that
# starts or ends with "-". The quantifiers are possessive because a piece never has to give
# characters back (each ends where the alphanum run ends), and that keeps the Via fast path
# as quick as a plain character class. The toplabel's leading ALPHA is not enforced:
# "10.0.0.300" and "1.2.3" are then valid names; code that needs real addresses checks them
# with the ipaddress module.
_HOSTNAME: Final = r"[A-Za-z0-9]++(?:\.[A-Za-z0-9]++|-++[A-Za-z0-9]++)*+\.?"
HOSTNAME: Final = re.compile(_HOSTNAME)
# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT (no range check, as the ABNF)
IPV4ADDRESS: Final = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
# IPv6reference = "[" IPv6address "]": left to ipaddress.IPv6Address, see uri.py.
# uri-parameters = *( ";" uri-parameter ); uri-parameter = pname [ "=" pvalue ], whose
# characters are paramchar = param-unreserved / unreserved / escaped. "@" is tolerated in
# values (maddr and user-written parameters carry it).
_PARAMCHARS: Final = r"A-Za-z0-9\-_.!~*'()%\[\]/:&+$"
URI_PARAMS: Final = re.compile(rf"(?:;[{_PARAMCHARS}]+(?:=[{_PARAMCHARS}@]*)?)*")
# One pvalue made of paramchars only: a value URI_PARAMS takes wherever it stands.
PARAM_VALUE: Final = re.compile(rf"[{_PARAMCHARS}]+")
# headers = "?" header *( "&" header ), without the "?": hnv-unreserved / unreserved / escaped
URI_HEADERS: Final = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/?:+$=&@]*")

# --- header values (25.1, 20) ------------------------------------------------------------

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method (the number bounded to 32 bits by 8.1.1.5)
CSEQ: Final = re.compile(rf"([0-9]{{1,10}})[{WSP}]+([{TOKEN_CHARS}]+)")
# sent-protocol = protocol-name SLASH protocol-version SLASH transport, for SIP/2.0 only;
# SLASH = SWS "/" SWS (RFC 4475 wsinv). Use with match(): sent-by follows.
SENT_PROTOCOL: Final = re.compile(
    rf"SIP[{WSP}]*/[{WSP}]*2\.0[{WSP}]*/[{WSP}]*([{TOKEN_CHARS}]+)", re.IGNORECASE
)
# via-parm = sent-protocol LWS sent-by *( SEMI via-params ), in the form nearly every Via
# takes: no LWS inside, a host name or IPv4 address, token parameters. Groups: transport,
# host, port, parameters. Anything else (IPv6, blanks, quoted values) is for the general
# parser, which uses the rules above.
_VIA_PARAMS: Final = rf"(?:;[{TOKEN_CHARS}]+(?:=[{TOKEN_CHARS}]+)?)*"
VIA_FAST: Final = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ({_HOSTNAME})(?::([0-9]{{1,5}}))?({_VIA_PARAMS})"
)
# The parameters part of VIA_FAST alone, for a Via whose sent-by was read before.
VIA_PARAMS: Final = re.compile(_VIA_PARAMS)
# tag-param = "tag" EQUAL token (From, To): use with search() to find a tag without parsing
# the whole name-addr. Group 1 is the tag, which may be empty when the sender wrote "tag=".
TAG_PARAM: Final = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;,\s]*)", re.IGNORECASE)
# dig-resp's username = "username" EQUAL username-value, username-value = quoted-string (some
# clients send a token): use with search() on Authorization or Proxy-Authorization. Group 1 is
# the quoted form's inside, still escaped; group 2 the bare form.
DIGEST_USERNAME: Final = re.compile(
    r"""username\s*=\s*"((?:[^"\\]|\\.)*)"|username\s*=\s*([^\s,]+)""", re.IGNORECASE
)

# --- header names (7.3.3) ----------------------------------------------------------------

# RFC 3261 7.3.3 compact forms, plus those registered since (RFC 3515, 3892, 3903, 4028, 4474).
COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}
