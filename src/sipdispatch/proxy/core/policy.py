"""Request policy: what the proxy refuses to dispatch, however well formed.

A proxy on a public address is scanned within minutes, and the gateways behind it see only the
proxy's address, so their own defences cannot act: the proxy decides for them. Each rule is
O(1) or one C-speed scan, allocates nothing for a request that passes, and is a field of
``RequestPolicy``; a refusal is a ``PolicyRefusalError`` naming its ``rule`` (the metrics label).

The rules, in the order they apply (docs/dispatcher.md, "Request policy", says why each answer):

* ``user-agent``: a User-Agent of a known scanner is dropped without an answer;
* ``control-character``: a control character in a request's header section other than the
  CRLF line ends and HTAB (a bare CR or LF, NUL...) gets 400 (found by ``codec.parse``, which
  cuts the lines anyway, when ``controls`` is on);
* ``method``: a method outside the allowed set gets 405 with ``Allow``;
* ``loop``: a request that already went through this proxy unchanged gets 482 (RFC 3261 16.3
  item 4, by the loop tag each of our branches carries);
* ``domain``: a new request whose Request-URI names a host that is not one of the proxy's own
  gets 403 (a proxy that relays anywhere is an open relay).

The Max-Forwards ceiling is no refusal: a request is forwarded with at most ``max_forwards``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request

__all__ = [
    "DEFAULT_METHODS",
    "OFF",
    "SCANNER_USER_AGENTS",
    "PolicyRefusalError",
    "RequestPolicy",
    "loop_tag",
    "request_uri_host",
]

#: what a dispatcher of calls needs: calls (RFC 3261, 3262 PRACK, 3311 UPDATE), their in-dialog
#: requests (6086 INFO, 3515 REFER, 6665 SUBSCRIBE/NOTIFY), 3428 MESSAGE, and OPTIONS pings;
#: not REGISTER or PUBLISH, which belong to a registrar or presence server
DEFAULT_METHODS: Final = (
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
SCANNER_USER_AGENTS: Final = (
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
    #: refuse control characters in the header section (400; ``codec.parse`` finds them)
    controls: bool
    #: whether any rule refuses anything: when not, the proxy skips them all
    active: bool
    #: User-Agent value -> refused, for the values seen first (a trunk sends one for every
    #: request): a dict look-up instead of the pattern's search
    _verdicts: dict[str, bool] = field(compare=False, repr=False)

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
        self._verdicts = {}
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
        if agent is None:
            return None
        refused = self._verdicts.get(agent)
        if refused is None:
            refused = pattern.search(agent) is not None
            if len(self._verdicts) < _VERDICTS:  # bounded: the values come from the network
                self._verdicts[agent] = refused
        if not refused:
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
OFF: Final = RequestPolicy(
    methods=None, user_agents=(), max_forwards=255, loops=False, controls=False
)


_VERDICTS: Final = 1024


def _host_key(host: str) -> str:
    return host.strip("[]").lower()


def request_uri_host(uri: str) -> str | None:
    """The host of a SIP or SIPS Request-URI as written, or None for another scheme.

    The scheme is told as ``parse_uri`` tells it; then the user part goes up to its "@" (which
    a user part cannot contain unescaped), and the host is an IPv6 reference or runs up to the
    port, parameters or headers. Index arithmetic rather than a pattern or ``partition``: this
    runs for every new request, and either of those cost several times as much here.
    """
    colon = uri.find(":")
    if colon not in (3, 4) or uri[:colon].lower() not in ("sip", "sips"):
        return None
    start = uri.find("@", colon)
    start = colon + 1 if start < 0 else start + 1
    end = len(uri)
    if start < end and uri[start] == "[":
        close = uri.find("]", start)
        if close >= 0:
            return uri[start : close + 1]
    # the host ends at the first of ":", ";" and "?" (each find stops where the last did)
    found = uri.find(":", start, end)
    end = end if found < 0 else found
    found = uri.find(";", start, end)
    end = end if found < 0 else found
    found = uri.find("?", start, end)
    return uri[start:end] if found < 0 else uri[start:found]


def loop_tag(request: Request) -> str:
    """What a request looks like to loop detection: a short hash of the fields that a loop
    keeps and a spiral changes (RFC 3261 16.6 step 8, without the top Via, which every hop
    replaces): the Request-URI, From, To, Call-ID and CSeq.

    Python's own hash: salted per process, which is enough, since only this process's own
    Via is ever compared with it (another replica's address is not ours). Written in decimal:
    the compiled build turns ``str`` of an int into one C call, a format spec into a
    ``str.format`` call that cost as much as the hash.
    """
    headers = request.headers
    fields = (
        request.uri,
        headers.get("from") or "",
        headers.get("to") or "",
        request.call_id,
        headers.get("cseq") or "",
    )
    return str(hash(fields) & 0xFFFFFFFF)
