"""Just enough SIP URI and address parsing for destination tables.

Destinations are written by people (a `dispatcher.list`, a YAML file, a custom
resource), so the parser is strict and its errors say what is wrong with the
text; it is not the message parser of `sip/`, which must be liberal with what
arrives on the wire. Every error is a `ValueError` whose text reads well after
a field name: ``uri: 'foo' is not a SIP URI``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "TRANSPORTS",
    "SipUri",
    "SocketAddress",
    "parse_host",
    "parse_hostport",
    "parse_sip_uri",
    "parse_socket",
    "uri_user_host",
]

TRANSPORTS = ("udp", "tcp", "tls")

# RFC 1123 host names; IP literals are checked by the ipaddress module.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# RFC 3261 25.1 `user`: unreserved / escaped / user-unreserved, no '@' or ';'.
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,?/]+")


@dataclass(frozen=True, slots=True)
class SipUri:
    """The parts of a destination URI that routing and identity depend on."""

    scheme: str  # "sip" or "sips"
    user: str | None
    host: str  # lower case; IPv6 without brackets
    port: int  # the default port filled in when the URI has none
    transport: str  # "udp" | "tcp" | "tls"
    explicit_port: bool

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def normalised(self) -> str:
        """A canonical spelling: equal for URIs that reach the same place.

        Case of scheme and host, a default port and the transport parameter
        are spelled out; other parameters do not change where requests go.
        """
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}:{user}{self.hostport};transport={self.transport}"


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """A `proto:host:port` socket, as in Kamailio's `socket=` and `listen=`."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_host(text: str) -> str:
    """Check an IPv4, bracketed IPv6 or DNS host; return it in canonical form."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"{text!r} has an unclosed '['")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    if re.fullmatch(r"[0-9.]+", text):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 address") from None
    if not text or len(text) > 253 or not _HOSTNAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a host name or IP address")
    return text.lower().rstrip(".")


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r} has an invalid port {text!r}")
    return int(text)


def _split_hostport(text: str, whole: str) -> tuple[str, str | None]:
    """Split `host[:port]`, where host may be a bracketed IPv6 literal."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{whole!r} has an unclosed '['")
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{whole!r} has junk after the IPv6 address")
        return text[: end + 1], (rest[1:] if rest else None)
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Parse `host[:port]` (an advertised address); the port is optional."""
    host_text, port_text = _split_hostport(text, text)
    port = None if port_text is None else _parse_port(port_text, text)
    return parse_host(host_text), port


def parse_sip_uri(text: str) -> SipUri:
    """Parse a destination such as ``sip:10.0.0.5:5060;transport=tcp``."""
    whole = text
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips") or not rest:
        raise ValueError(f"{whole!r} is not a SIP URI (expected sip:host[:port])")
    rest, _, _headers = rest.partition("?")
    hostpart, *params = rest.split(";")
    user: str | None = None
    if "@" in hostpart:
        userinfo, _, hostpart = hostpart.rpartition("@")
        user = userinfo.partition(":")[0]  # a password has no place in routing
        if not _USER.fullmatch(user):
            raise ValueError(f"{whole!r} has an invalid user part {user!r}")
    host_text, port_text = _split_hostport(hostpart, whole)
    try:
        host = parse_host(host_text)
    except ValueError as exc:
        raise ValueError(f"{whole!r} is not a SIP URI: host {exc}") from None
    transport = "tls" if scheme == "sips" else "udp"
    for param in params:
        name, _, value = param.partition("=")
        if name.lower() != "transport":
            continue
        value = value.lower()
        if value not in TRANSPORTS:
            raise ValueError(
                f"{whole!r} has transport {value!r}; expected one of {', '.join(TRANSPORTS)}"
            )
        if scheme == "sips" and value == "udp":
            raise ValueError(f"{whole!r}: a sips URI cannot use transport=udp")
        # sips over TCP means TLS: the scheme asks for a secure hop.
        transport = "tls" if scheme == "sips" else value
    if port_text is None:
        port = 5061 if transport == "tls" else 5060
    else:
        port = _parse_port(port_text, whole)
    return SipUri(scheme, user, host, port, transport, port_text is not None)


def parse_socket(text: str) -> SocketAddress:
    """Parse `proto:host:port` (`udp:10.0.0.1:5060`, `tcp:[::1]:5060`)."""
    proto, sep, rest = text.partition(":")
    if not sep or proto.lower() not in TRANSPORTS:
        raise ValueError(
            f"{text!r} is not a socket (expected proto:host:port, proto one of "
            f"{', '.join(TRANSPORTS)})"
        )
    host_text, port_text = _split_hostport(rest, text)
    if port_text is None:
        raise ValueError(f"{text!r} has no port (expected proto:host:port)")
    return SocketAddress(proto.lower(), parse_host(host_text), _parse_port(port_text, text))


def uri_user_host(value: str) -> str:
    """The `user@host` identity of a URI or name-addr, for hashing.

    Accepts a bare URI or a header value with a display name and `<...>`;
    drops the scheme, port, parameters and headers, and folds the host's
    case, so that the same caller hashes the same however the URI is dressed.
    """
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        value = value[start + 1 : end if end > 0 else None]
    value = value.strip()
    _, sep, rest = value.partition(":")
    if sep:
        value = rest
    value = value.split(";", 1)[0].split("?", 1)[0]
    user, sep, host = value.rpartition("@")
    # Drop the port; an IPv6 literal keeps its brackets and inner colons.
    bracket = host.find("]")
    host = host[: bracket + 1] if host.startswith("[") else host.partition(":")[0]
    return f"{user}@{host.lower()}" if sep else host.lower()
