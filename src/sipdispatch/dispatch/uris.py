"""Destination addresses: SIP URIs, sockets and hosts as people write them in tables.

Destinations are written by people (a `dispatcher.list`, a YAML file, a custom resource), so
on top of the SIP grammar of `sipdispatch.sip` these parsers ask what a destination needs:
a sip or sips URI, a host that is an IP address or a resolvable name, a port from 1 to 65535,
a transport the proxy speaks. The result is a `sip.uri.SipUri` in canonical form, whose text
is the same for two spellings of one destination. Every error is a `ValueError` whose text
reads well after a field name: ``uri: 'foo' is not a SIP URI``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sipdispatch.sip import grammar
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.uri import SipUri, format_host, parse_uri

__all__ = [
    "TRANSPORTS",
    "ListenAddress",
    "SocketAddress",
    "normalise",
    "parse_host",
    "parse_hostport",
    "parse_listen",
    "parse_sip_uri",
    "parse_socket",
]

TRANSPORTS = ("udp", "tcp", "tls")

# DNS limits (RFC 1035 2.3.4) that the SIP grammar does not set: a longer name never resolves.
_MAX_NAME = 253
_MAX_LABEL = 63


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """A `proto:host:port` socket, as in Kamailio's `socket=` and `listen=`."""

    transport: str
    host: str  # canonical; IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{format_host(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A listener as given: its socket and, Kamailio style, the address it advertises
    (``udp:10.0.0.1:5060 advertise 203.0.113.1:5060``; no port: the socket's)."""

    socket: SocketAddress
    advertise: tuple[str, int | None] | None = None

    def __str__(self) -> str:
        if self.advertise is None:
            return str(self.socket)
        return f"{self.socket} advertise {format_host(*self.advertise)}"


def parse_host(text: str) -> str:
    """Check an IPv4, bracketed IPv6 or DNS host; return it in canonical form (IPv6 without
    brackets, names in lower case without the trailing dot)."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"{text!r} has an unclosed '['")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    if text.replace(".", "").isdigit():
        # All digits and dots: meant as an address, so "10.0.0.256" and "1.2.3" are errors
        # even though the SIP grammar reads them as host names.
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 address") from None
    name = text.rstrip(".")
    if (
        not grammar.HOSTNAME.fullmatch(text)
        or len(name) > _MAX_NAME
        or any(len(label) > _MAX_LABEL for label in name.split("."))
    ):
        raise ValueError(f"{text!r} is not a host name or IP address")
    return name.lower()


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
    """Parse a destination such as ``sip:10.0.0.5:5060;transport=tcp``, in canonical form.

    The canonical URI has the scheme and host in lower case, the port and the transport
    spelled out (the defaults filled in), no password, other parameters or headers: they do
    not change where requests go. Its text is the destination's identity, see `normalise`.
    """
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips") or not rest:
        raise ValueError(f"{text!r} is not a SIP URI (expected sip:host[:port])")
    try:
        uri = parse_uri(text)
    except RemoteProtocolError as exc:
        raise ValueError(f"{text!r} is not a SIP URI: {exc}") from None
    if not isinstance(uri, SipUri):  # not reached: the scheme is sip or sips
        raise ValueError(f"{text!r} is not a SIP URI")
    try:
        host = parse_host(uri.host)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a SIP URI: host {exc}") from None
    transport = "tls" if scheme == "sips" else "udp"
    asked = uri.param("transport")
    if asked is not None:
        asked = asked.lower()
        if asked not in TRANSPORTS:
            raise ValueError(
                f"{text!r} has transport {asked!r}; expected one of {', '.join(TRANSPORTS)}"
            )
        if scheme == "sips" and asked == "udp":
            raise ValueError(f"{text!r}: a sips URI cannot use transport=udp")
        # sips over TCP means TLS: the scheme asks for a secure hop.
        transport = "tls" if scheme == "sips" else asked
    if uri.port is None:
        port = 5061 if transport == "tls" else 5060
    else:
        port = _parse_port(str(uri.port), text)
    host = f"[{host}]" if ":" in host else host
    return SipUri(scheme, uri.user, None, host, port, params=f";transport={transport}")


def normalise(text: str) -> str:
    """A destination's canonical spelling: equal for URIs that reach the same place.

    ``SIP:GW.example.com`` and ``sip:gw.example.com:5060;transport=udp;lr`` are both
    ``sip:gw.example.com:5060;transport=udp``. Raises `ValueError` like `parse_sip_uri`.
    """
    return str(parse_sip_uri(text))


def parse_listen(text: str) -> ListenAddress:
    """Parse `proto:host:port [advertise host[:port]]`."""
    socket_text, _, rest = text.strip().partition(" ")
    words = rest.split()
    if not words:
        return ListenAddress(parse_socket(socket_text))
    if len(words) != 2 or words[0].lower() != "advertise":
        raise ValueError(
            f"{text!r} is not a listener (expected proto:host:port [advertise host[:port]])"
        )
    return ListenAddress(parse_socket(socket_text), parse_hostport(words[1]))


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
