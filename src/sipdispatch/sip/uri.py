"""SIP and SIPS URIs (RFC 3261 19.1), with the IPv6 rules of RFC 5118.

A proxy reads few parts of a URI (host, port, transport, ``lr``, its own signed parameters) and
forwards the rest byte for byte, so ``SipUri`` keeps the parameter and header text as written and
only splits it on demand. Other schemes (``tel:``, ``http:``...) are legal in many headers and are
checked only for the generic ``scheme ":" opaque`` shape.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

from sipdispatch.sip import grammar
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.memo import remember

__all__ = ["SipUri", "format_host", "parse_host_port", "parse_uri", "unescape"]


def unescape(text: str) -> str:
    """Decode %HH escapes once (RFC 4475 esc01, escnull: %00 stays a NUL, nothing is cut)."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _valid_ipv6(text: str) -> str:
    """Return the canonical form of an IPv6 reference's inside, or raise ValueError.

    RFC 5118 4.10 asks to tolerate ``2001:db8:::192.0.2.1`` (an RFC 3261 ABNF bug), so a
    triple colon before an embedded IPv4 address is read as a double one.
    """
    candidate = text.replace(":::", "::") if ":::" in text and "." in text else text
    return str(ipaddress.IPv6Address(candidate))


#: host[:port] texts read already: a peer's address recurs in URIs that do not (its tags,
#: a dialog's signed Route)
_HOST_PORTS: Final[dict[str, tuple[str, int | None]]] = {}


def parse_host_port(text: str, what: str = "host") -> tuple[str, int | None]:
    """Split ``host[:port]``; the host keeps its brackets when it is an IPv6 reference.
    ``what`` names the text in the error."""
    known = _HOST_PORTS.get(text)
    if known is not None:
        return known
    return remember(_HOST_PORTS, text, _parse_host_port(text, what))


def _parse_host_port(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RemoteProtocolError(f"{what}: unclosed IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        try:
            _valid_ipv6(host[1:-1])
        except ValueError:
            raise RemoteProtocolError(f"{what}: bad IPv6 reference {host!r}") from None
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
        if not (grammar.IPV4ADDRESS.fullmatch(host) or grammar.HOSTNAME.fullmatch(host)):
            raise RemoteProtocolError(f"{what}: bad host {host!r}")
    if not rest:
        return host, None
    if rest[0] != ":" or not grammar.is_digits(rest[1:]) or len(rest) > 6 or int(rest[1:]) > 65535:
        raise RemoteProtocolError(f"{what}: bad port in {text!r}")
    return host, int(rest[1:])


def format_host(host: str, port: int | None) -> str:
    """``host[:port]``, bracketing a bare IPv6 address."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


# Records made for every message are dataclasses with a hand-written __init__, not frozen:
# mypyc runs a frozen dataclass's generated __init__ interpreted (about 440 ns a record
# against 85 ns compiled). Treat them as immutable all the same.
@dataclass(slots=True, init=False, unsafe_hash=True)
class SipUri:
    """A parsed ``sip:`` or ``sips:`` URI. ``params`` and ``headers`` keep their source text."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: str = ""
    headers: str = ""

    def __init__(
        self,
        scheme: str,
        user: str | None,
        password: str | None,
        host: str,
        port: int | None,
        *,
        params: str = "",
        headers: str = "",
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params
        self.headers = headers

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (``""`` for a flag such as ``lr``), or None when absent."""
        params = self.params
        if not params:
            return None
        name = name.lower()
        # Most URIs lack the name asked for: one look through the lowered text settles that
        # without splitting (a signed Route's parameters are long, and asked for twice).
        if name not in params.lower():
            return None
        for item in params[1:].split(";"):
            key, _, value = item.partition("=")
            if key.lower() == name:
                return value
        return None

    @property
    def transport(self) -> str:
        """The transport the URI asks for: its ``transport`` param, else udp (tls for sips)."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def host_address(self) -> str:
        """The host without IPv6 brackets, as sockets want it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def default_port(self) -> int:
        return self.port if self.port is not None else (5061 if self.scheme == "sips" else 5060)

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{format_host(self.host, self.port)}{self.params}{headers}"


#: URIs parsed already (see ``memo``): a trunk's URIs recur in every call
_PARSED: Final[dict[str, SipUri | str]] = {}


def parse_uri(text: str, *, allow_headers: bool = True) -> SipUri | str:
    """Parse a URI. Returns a ``SipUri`` for sip/sips, else the text of a generic URI.

    Raises ``RemoteProtocolError`` (400) on anything that is not a URI at all. A Request-URI may
    not carry ``?headers`` (RFC 4475 escruri): pass ``allow_headers=False`` for it.
    """
    known = _PARSED.get(text)
    if known is not None and (allow_headers or isinstance(known, str) or not known.headers):
        return known
    return remember(_PARSED, text, _parse_uri(text, allow_headers))


def _parse_uri(text: str, allow_headers: bool) -> SipUri | str:
    scheme, colon, rest = text.partition(":")
    lowered = scheme.lower()
    sip = lowered in ("sip", "sips")  # schemes by the grammar: its regex is for the others
    if not colon or not rest or not (sip or grammar.SCHEME.fullmatch(scheme)):
        raise RemoteProtocolError(f"not a URI: {text!r}")
    if any(c in text for c in ' \t\r\n<>"'):
        raise RemoteProtocolError(f"URI contains whitespace or delimiters: {text!r}")
    if not sip:
        return text
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        userinfo, hostpart = "", rest
    elif not grammar.USERINFO.fullmatch(userinfo) or not userinfo:
        raise RemoteProtocolError(f"bad user part in {text!r}")
    hostpart, qmark, headers = hostpart.partition("?")
    if qmark and (not allow_headers or not grammar.URI_HEADERS.fullmatch(headers)):
        raise RemoteProtocolError(f"URI headers not allowed here: {text!r}")
    semi = hostpart.find(";")
    hostport, params = (hostpart, "") if semi < 0 else (hostpart[:semi], hostpart[semi:])
    if params and not grammar.URI_PARAMS.fullmatch(params):
        raise RemoteProtocolError(f"bad URI parameters in {text!r}")
    host, port = parse_host_port(hostport, "URI host")
    user: str | None = None
    password: str | None = None
    if at:
        # A password is what follows the first ":" of userinfo; users may not contain one raw.
        user, colon2, pw = userinfo.partition(":")
        password = pw if colon2 else None
    return SipUri(lowered, user, password, host, port, params=params, headers=headers)
