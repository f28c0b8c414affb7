"""RFC 3261 section 25 grammar, as the regular expressions this package needs.

Only the rules that decide whether a message is acceptable are here; values the proxy merely
forwards stay opaque. Each fragment names the ABNF rule it stands for.
"""

from __future__ import annotations

import re

__all__ = [
    "COMPACT_FORMS",
    "HEADER_NAME",
    "METHOD",
    "PARAM_NAME",
    "REQUEST_LINE",
    "SCHEME",
    "STATUS_LINE",
    "TOKEN",
]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = re.compile(rf"[{TOKEN_CHARS}]+")
# Method = INVITEm / ACKm / ... / extension-method, and extension-method = token
METHOD = TOKEN
# header-name = token (one regex so that "TO :" and "Content-Length   :" are accepted)
HEADER_NAME = TOKEN
# generic-param name = token
PARAM_NAME = TOKEN
# Request-Line = Method SP Request-URI SP SIP-Version CRLF: exactly one SP between elements,
# no LWS inside the URI (RFC 4475 lwsstart, trws, lwsruri).
REQUEST_LINE = re.compile(rf"([{TOKEN_CHARS}]+) ([^ \t]+) ([^ \t]+)")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF; Status-Code = 3DIGIT
STATUS_LINE = re.compile(r"(SIP/[0-9]+\.[0-9]+) ([0-9]{3}) (.*)", re.DOTALL)
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# RFC 3261 7.3.3 compact forms, plus those registered since (RFC 3515, 3892, 3903, 4028, 4474).
COMPACT_FORMS: dict[str, str] = {
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
