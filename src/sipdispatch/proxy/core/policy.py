"""Request policy: what the proxy refuses to dispatch, however well formed.

A proxy on a public address is scanned within minutes, and the gateways behind it see only the
proxy's address, so their own defences cannot act: the proxy decides for them. Each rule is
O(1) or one C-speed scan, allocates nothing for a request that passes, and is a field of
``RequestPolicy``; a refusal is a ``PolicyRefusalError`` naming its ``rule`` (the metrics label).

The rules, in the order they apply (docs/dispatcher.md, "Request policy", says why each answer):

* ``user-agent``: a User-Agent of a known scanner is dropped without an answer;
* ``control-character``: a control character in the header section other than the CRLF line
  ends and HTAB (a bare CR or LF, NUL...) gets 400, a response with one is dropped;
* ``method``: a method outside the allowed set gets 405 with ``Allow``;
* ``loop``: a request that already went through this proxy unchanged gets 482 (RFC 3261 16.3
  item 4, by the loop tag each of our branches carries);
* ``domain``: a new request whose Request-URI names a host that is not one of the proxy's own
  gets 403 (a proxy that relays anywhere is an open relay).

The Max-Forwards ceiling is no refusal: a request is forwarded with at most ``max_forwards``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request

__all__ = [
    "DEFAULT_METHODS",
    "OFF",
    "SCANNER_USER_AGENTS",
    "PolicyRefusalError",
    "RequestPolicy",
    "has_control_characters",
    "loop_tag",
    "request_uri_host",
]

#: what a dispatcher of calls needs: calls (RFC 3261, 3262 PRACK, 3311 UPDATE), their in-dialog
#: requests (6086 INFO, 3515 REFER, 6665 SUBSCRIBE/NOTIFY), 3428 MESSAGE, and OPTIONS pings;
#: not REGISTER or PUBLISH, which belong to a registrar or presence server
DEFAULT_METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "PRACK",
    "UPDATE",
    "INFO",
    "REFER",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
)

#: User-Agent substrings of the common SIP scanners (matched case-insensitively)
SCANNER_USER_AGENTS = (
    "friendly-scanner",  # SIPVicious svmap, svwar, svcrack (their default)
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "VaxSIPUserAgent",
    "iWar",
    "sundayddr",
    "SIVuS",
    "smap",
    "pplsip",
)


class PolicyRefusalError(RemoteProtocolError):
    """A request the policy refuses; ``rule`` names the rule, ``silent`` means no answer."""

    def __init__(
        self, rule: str, message: str, status: int, reason: str = "", *, silent: bool = False
    ) -> None:
        super().__init__(message, status, reason or None)
        self.rule = rule
        self.silent = silent


# Built once per settings change, read on every message: a hand-written __init__ (mypyc).
@dataclass(slots=True, init=False)
class RequestPolicy:
    """Which requests the proxy dispatches; ``OFF`` is the policy that refuses nothing."""

    #: methods dispatched, None: any; others get 405 (ACK and CANCEL always pass: they
    #: follow an INVITE)
    methods: frozenset[str] | None
    #: the value of the ``Allow`` header of a 405
    allow: str
    #: hosts (lowercase, IPv6 without brackets) a new request's Request-URI may name; None: any
    domains: frozenset[str] | None
    #: one pattern over the scanner User-Agent substrings; None: no User-Agent is refused
    user_agents: re.Pattern[str] | None
    #: highest Max-Forwards sent downstream (a higher value received is lowered to it)
    max_forwards: int
    #: refuse a request that looped back unchanged (482)
    loops: bool
    #: refuse control characters in the header section (400)
    controls: bool
    #: whether any rule refuses anything: when not, the proxy skips them all
    active: bool

    def __init__(
        self,
        methods: tuple[str, ...] | frozenset[str] | None = DEFAULT_METHODS,
        domains: frozenset[str] | None = None,
        user_agents: tuple[str, ...] = SCANNER_USER_AGENTS,
        max_forwards: int = 70,
        *,
        loops: bool = True,
        controls: bool = True,
    ) -> None:
        allowed = None if methods is None else frozenset(m.upper() for m in methods)
        self.methods = None if allowed is None else allowed | {"ACK", "CANCEL"}
        self.allow = (
            ""
            if self.methods is None
            else ", ".join(m for m in DEFAULT_METHODS if m in self.methods)
            + "".join(f", {m}" for m in sorted(self.methods - set(DEFAULT_METHODS)))
        )
        self.domains = None if domains is None else frozenset(_host_key(d) for d in domains)
        self.user_agents = (
            re.compile("|".join(re.escape(agent) for agent in user_agents), re.IGNORECASE)
            if user_agents
            else None
        )
        self.max_forwards = max_forwards
        self.loops = loops
        self.controls = controls
        self.active = (
            self.methods is not None
            or self.domains is not None
            or self.user_agents is not None
            or loops
            or controls
        )

    def refused_agent(self, request: Request) -> PolicyRefusalError | None:
        """A scanner's request: dropped silently, so that the scan learns nothing."""
        pattern = self.user_agents
        if pattern is None:
            return None
        agent = request.headers.get("user-agent")
        if agent is None or pattern.search(agent) is None:
            return None
        return PolicyRefusalError(
            "user-agent", f"scanner User-Agent {agent[:60]!r}", 403, silent=True
        )

    def refused_method(self, request: Request) -> PolicyRefusalError | None:
        methods = self.methods
        if methods is None or request.method in methods:
            return None
        return PolicyRefusalError("method", f"method {request.method[:30]} not allowed", 405)

    def refused_domain(self, request: Request) -> PolicyRefusalError | None:
        """A new request for a host that is not this proxy's (tel: URIs name no host: pass)."""
        domains = self.domains
        if domains is None:
            return None
        host = request_uri_host(request.uri)
        if host is None or host in domains or _host_key(host) in domains:
            return None
        return PolicyRefusalError(
            "domain", f"Request-URI host {host[:60]!r} is not ours", 403, "Not Relaying"
        )


#: the policy that refuses nothing and lowers no Max-Forwards (``--no-request-policy``)
OFF = RequestPolicy(methods=None, user_agents=(), max_forwards=255, loops=False, controls=False)


def _host_key(host: str) -> str:
    return host.strip("[]").lower()


#: scheme, then the user part up to its "@" (which a user part cannot contain unescaped),
#: then the host: an IPv6 reference or up to the port, parameters or headers
_RURI_HOST = re.compile(r"sips?:(?:[^@]*@)?(\[[^\]]*\]|[^:;?]*)", re.IGNORECASE)


def request_uri_host(uri: str) -> str | None:
    """The host of a SIP or SIPS Request-URI as written, or None for another scheme."""
    match = _RURI_HOST.match(uri)
    return match.group(1) if match is not None else None


#: control characters a header section may not hold; CR and LF are counted separately
_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def has_control_characters(data: bytes) -> bool:
    """Whether the header section of ``data`` holds a control character that is not part of a
    line end (CRLF, or LF alone in a message written with bare LFs) or an HTAB.

    Counts and one regular expression over bytes: C work, whatever the message's size.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
        if end < 0:
            end = len(data)
    crlf = data.count(b"\r\n", 0, end)
    if crlf:
        # Every CR and every LF must belong to a CRLF pair.
        if data.count(b"\r", 0, end) != crlf or data.count(b"\n", 0, end) != crlf:
            return True
    elif data.find(b"\r", 0, end) >= 0:
        return True  # bare LF line ends: a CR anywhere is one on its own
    return _CONTROLS.search(data, 0, end) is not None


def loop_tag(request: Request) -> str:
    """What a request looks like to loop detection: a short hash of the fields that a loop
    keeps and a spiral changes (RFC 3261 16.6 step 8, without the top Via, which every hop
    replaces): the Request-URI, From, To, Call-ID and CSeq."""
    headers = request.headers
    seed = "\x00".join(
        (
            request.uri,
            headers.get("from") or "",
            headers.get("to") or "",
            request.call_id,
            headers.get("cseq") or "",
        )
    )
    return f"{zlib.crc32(seed.encode('utf-8', 'surrogateescape')):08x}"
