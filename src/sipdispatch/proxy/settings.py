"""The proxy's settings: one frozen object, each default declared once.

`ProxySettings` is what the command line (or a test) chooses; ``sipdispatch-proxy``'s flags
take their defaults from it. What a table's YAML configuration says wins over it where both
speak (probing, failover): `probe_settings` and `core_settings` merge the two. Defaults owned
by a lower layer are read from there, not repeated: the core's answer timeout and T1
(`CoreSettings`, `Timers`), probing (`ProbingSpec`), failover (`FailoverSpec`).
"""

from __future__ import annotations

import dataclasses
import resource
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sipdispatch.dispatch import health
from sipdispatch.dispatch.config import FailoverSpec, ProbingSpec, ProxyConfig, expand_codes
from sipdispatch.dispatch.names import RefreshPolicy
from sipdispatch.proxy.core import Address, CoreSettings, Listener
from sipdispatch.proxy.core.admission import AdmissionSettings
from sipdispatch.proxy.core.policy import (
    DEFAULT_METHODS,
    OFF,
    SCANNER_USER_AGENTS,
    RequestPolicy,
)
from sipdispatch.proxy.transport.tcp import TcpLimits
from sipdispatch.proxy.wallclock import clock_offset
from sipdispatch.sip.limits import MessageLimits
from sipdispatch.sip.transaction import Timers

__all__ = [
    "DEFAULTS",
    "ProbeSettings",
    "ProxySettings",
    "core_settings",
    "dns_policy",
    "probe_settings",
    "with_failover",
]

_CORE = CoreSettings(local={}, advertise=("", 0))
_DNS = RefreshPolicy()
_LIMITS = MessageLimits()
_ADMISSION = AdmissionSettings()
#: Kamailio's tcp_max_connections: the cap on inbound TCP connections when the descriptors allow
TCP_CONNECTIONS = 2048
_POLICY = RequestPolicy()
#: in ``allow_domains`` or ``allow_methods``: any host, any method
ANY = "*"


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """How one proxy runs, apart from where its table comes from."""

    #: ``udp:IP:PORT`` / ``tcp:IP:PORT``, each optionally followed by ``advertise
    #: HOST[:PORT]``; empty means "what the config file says"
    listen: tuple[str, ...] = ()
    #: ``host[:port]`` written in Record-Route by listeners that advertise none of their own;
    #: default: each listener's own address
    advertise: str | None = None
    #: the keys that sign Record-Routes, the first signs, any is accepted (``routekeys``);
    #: none: a random key of this process only
    secret_keys: tuple[bytes, ...] = ()
    #: the file ``secret_keys`` came from, read again when it changes; None: they are fixed
    secret_file: Path | None = None
    #: certificate (chain) and key of the tls listeners, PEM files watched for changes; None:
    #: what the YAML config's ``tls`` section says
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: no response at all from a destination within this time counts as a 408
    answer_timeout: float = _CORE.answer_timeout
    #: RFC 3261 T1 (RTT estimate); every transaction timer scales with it
    timer_t1: float = _CORE.timers.t1
    #: ``IP:PORT`` of the HTTP control API; None disables it
    control: str | None = "127.0.0.1:8080"
    #: worker processes sharing the listening ports (``workers.py``); 1: this process alone
    workers: int = 1
    #: which worker this process is: 0 is the leader (probes, control API), others follow it
    worker_index: int = 0
    #: the leader's unix socket the other workers follow (``workerlink.py``); "": none
    worker_link: str = ""
    #: bearer token required by write calls of the control API; "" = none given: writes are
    #: then open on a loopback ``control`` address only, else a token is made and logged
    control_token: str = ""
    #: on SIGTERM, how long transactions in flight may take to finish before the proxy exits
    drain_timeout: float = 10.0
    #: probing and health thresholds for a table without a YAML config (a dispatcher.list);
    #: a YAML config's own ``probing`` section takes precedence
    probing: ProbingSpec = field(default_factory=ProbingSpec)
    #: a dialog whose BYE was never seen stops counting as a call on its destination after this
    max_dialog_age: float = 4 * 3600.0
    #: DNS servers for destinations named by DNS, ``IP[:PORT]`` each; empty: resolv.conf
    dns_servers: tuple[str, ...] = ()
    #: seconds one DNS resolution (all its queries and retries) may take
    dns_timeout: float = 2.0
    #: re-resolve a name no sooner than this after its last answer, whatever its TTL
    dns_refresh_floor: float = _DNS.floor
    #: and no later than this
    dns_refresh_ceiling: float = _DNS.ceiling
    #: through timeouts and SERVFAIL, the last good addresses serve this long past their TTL
    dns_max_stale: float = _DNS.max_stale
    #: an address that left its name's answer drains (DR) this long before it is removed
    dns_drain_grace: float = _DNS.drain_grace
    #: how often Retry-After drains and stale dialogs are expired
    housekeeping_interval: float = 0.5
    #: a signed Record-Route is honoured this long after the call began (in-dialog requests
    #: of longer calls are refused with 403)
    dialog_lifetime: float = _CORE.dialog_lifetime
    #: bytes of one message (UDP datagram or framed TCP message); larger ones get 513
    max_message_size: int = _LIMITS.max_message_size
    #: header lines of one message; more get 400 Too Many Headers
    max_headers: int = _LIMITS.max_headers
    #: bytes of one header line; longer get 400 Header Line Too Long
    max_line_length: int = _LIMITS.max_line_length
    #: elements of the Via list; more get 400 Too Many Via Entries
    max_via: int = _LIMITS.max_via
    #: elements of the Route list, and of the Record-Route list; more get 400
    max_route: int = _LIMITS.max_route
    #: the request policy as a whole; off, every rule below is (for comparisons, benches)
    request_policy: bool = True
    #: methods dispatched, ``*``: any; others get 405 with Allow (ACK and CANCEL always pass)
    allow_methods: tuple[str, ...] = DEFAULT_METHODS
    #: hosts a new request's Request-URI may name besides the proxy's own (the advertised
    #: address and the listeners'); ``*``: any host
    allow_domains: tuple[str, ...] = ()
    #: User-Agent substrings (case-insensitive) whose requests are dropped without an answer
    deny_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS
    #: highest Max-Forwards sent downstream: a higher one received is lowered to it
    max_forwards: int = _POLICY.max_forwards
    #: answer 482 to a request that comes back unchanged (RFC 3261 16.3 item 4)
    loop_detection: bool = _POLICY.loops
    #: answer 400 to a request with a control character (bare CR or LF, NUL...) in its header
    #: section
    refuse_control_characters: bool = _POLICY.controls

    #: new (out-of-dialog) requests per second from one source IP; more are refused (0: off)
    source_rate: int = _ADMISSION.source_rate
    #: in-dialog requests per second from one source IP (0: off)
    dialog_rate: int = _ADMISSION.dialog_rate
    #: seconds a source over either rate is refused altogether (0: no ban)
    source_ban: float = _ADMISSION.ban
    #: answer a UDP request refused by rate with 503 rather than drop it (TCP always answers)
    rate_reply_udp: bool = _ADMISSION.reply_udp
    #: source addresses the rate limits track per second (the rest share one count)
    rate_sources: int = _ADMISSION.max_sources
    #: live transactions; a new request beyond them gets 503 (0: no cap)
    max_transactions: int = _ADMISSION.max_transactions
    #: Retry-After of admission control's 503s, in seconds
    retry_after: int = _ADMISSION.retry_after
    #: inbound TCP connections; None: TCP_CONNECTIONS, or half of RLIMIT_NOFILE when that is
    #: lower (the control API and outbound connections need descriptors too); 0: no cap
    tcp_max_connections: int | None = None
    #: inbound TCP connections from one source address (0: no cap)
    tcp_max_per_source: int = 256
    #: a TCP connection that carries nothing for this long is closed (0: never)
    tcp_idle_timeout: float = 120.0
    #: a TCP connection with a message begun and not complete after this long is closed (0: never)
    tcp_message_timeout: float = 10.0

    #: after a 401/407, the Call-ID's next request goes to the same destination for this long
    challenge_affinity_ttl: float = _CORE.challenge_affinity_ttl
    #: challenged Call-IDs remembered at most; 0 turns challenge affinity off
    challenge_affinity_size: int = _CORE.challenge_affinity_size
    #: header naming each request's source (transport:ip:port) toward the destinations; None: off
    source_header: str | None = _CORE.source_header

    def limits(self) -> MessageLimits:
        """The message limits, as the core and the TCP framer take them."""
        return MessageLimits(
            self.max_message_size,
            self.max_headers,
            self.max_line_length,
            self.max_via,
            self.max_route,
        )

    def request_policy_for(
        self, local: dict[str, Address], advertise: Address, names: Iterable[str] = ()
    ) -> RequestPolicy:
        """The request policy of a proxy listening on ``local`` and advertising ``advertise``:
        those hosts, ``names`` (what a wildcard listener answers for) and ``allow_domains``
        are the hosts a Request-URI may name."""
        if not self.request_policy:
            return OFF
        domains: frozenset[str] | None = None
        if ANY not in self.allow_domains:
            hosts = {advertise[0], *(host for host, _ in local.values()), *names}
            domains = frozenset(hosts.union(self.allow_domains))
        return RequestPolicy(
            None if ANY in self.allow_methods else self.allow_methods,
            domains,
            self.deny_user_agents,
            self.max_forwards,
            loops=self.loop_detection,
            controls=self.refuse_control_characters,
        )

    def admission(self) -> AdmissionSettings:
        """Per-source rates and the transaction cap, as the core takes them."""
        return AdmissionSettings(
            source_rate=self.source_rate,
            dialog_rate=self.dialog_rate,
            ban=self.source_ban,
            max_sources=self.rate_sources,
            reply_udp=self.rate_reply_udp,
            max_transactions=self.max_transactions,
            retry_after=self.retry_after,
        )

    def tcp_limits(self) -> TcpLimits:
        """The TCP caps and timeouts, the connection cap resolved against RLIMIT_NOFILE."""
        cap = self.tcp_max_connections
        return TcpLimits(
            max_connections=default_tcp_connections() if cap is None else cap,
            max_per_source=self.tcp_max_per_source,
            idle_timeout=self.tcp_idle_timeout,
            message_timeout=self.tcp_message_timeout,
        )


def default_tcp_connections() -> int:
    """``TCP_CONNECTIONS``, or half of this process's descriptor limit when that is lower: the
    cap must stay well below the limit, or idle peers could take the descriptors the control
    API (liveness probes), UDP and outbound connections need."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return TCP_CONNECTIONS
    return max(1, min(TCP_CONNECTIONS, soft // 2))


#: the defaults, for the command line's help and flags
DEFAULTS = ProxySettings()


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """How to probe, as the prober and the health owner use it: a `ProbingSpec` compiled."""

    interval: float
    timeout: float
    jitter: float  # +/- fraction of the interval
    from_uri: str
    accepted: frozenset[int]
    policy: health.HealthPolicy
    #: replies to calls that count against a destination (passive marking)
    passive: frozenset[int]
    #: a probe's 503 Retry-After is cut to this many seconds
    max_retry_after: float

    @classmethod
    def from_spec(cls, spec: ProbingSpec) -> ProbeSettings:
        return cls(
            interval=spec.interval,
            timeout=spec.timeout,
            jitter=spec.jitter,
            from_uri=spec.from_,
            accepted=expand_codes(spec.reply_codes),
            policy=spec.policy(),
            passive=expand_codes(spec.passive_codes),
            max_retry_after=spec.max_retry_after,
        )


def dns_policy(settings: ProxySettings) -> RefreshPolicy:
    """The refresh bounds of DNS names (``dispatch.names.next_refresh``)."""
    return RefreshPolicy(
        settings.dns_refresh_floor,
        settings.dns_refresh_ceiling,
        settings.dns_max_stale,
        settings.dns_drain_grace,
    )


def probe_settings(config: ProxyConfig | None, settings: ProxySettings) -> ProbeSettings:
    """Probing as configured: the YAML config's, else the command line's."""
    return ProbeSettings.from_spec(config.probing if config is not None else settings.probing)


def core_settings(
    config: ProxyConfig | None,
    settings: ProxySettings,
    local: dict[str, Address],
    advertise: Address,
    names: Iterable[str] = (),
    *,
    listeners: tuple[Listener, ...] = (),
) -> CoreSettings:
    """What the core runs with: timers from ``settings``, failover from the config's section
    (a table without a config fails over as an empty section says). ``listeners``: every
    socket (empty: one per entry of ``local``, advertising ``advertise``); a Request-URI may
    name any address of theirs."""
    hosts = [*names, *(host for x in listeners for host in (x.local[0], x.advertise[0]))]
    t1 = settings.timer_t1
    timers = Timers(t1=t1, t2=max(_CORE.timers.t2, 8 * t1), t4=_CORE.timers.t4)
    base = CoreSettings(
        local,
        advertise,
        timers,
        answer_timeout=settings.answer_timeout,
        dialog_lifetime=settings.dialog_lifetime,
        clock_offset=clock_offset(),
        limits=settings.limits(),
        challenge_affinity_ttl=settings.challenge_affinity_ttl,
        challenge_affinity_size=settings.challenge_affinity_size,
        source_header=settings.source_header,
        admission=settings.admission(),
        policy=settings.request_policy_for(local, advertise, hosts),
        listeners=listeners,
    )
    return with_failover(base, config)


def with_failover(current: CoreSettings, config: ProxyConfig | None) -> CoreSettings:
    """``current`` with the failover section of ``config``; ``current`` itself when that
    changes nothing (a reload replaces only these fields)."""
    spec = config.failover if config is not None else FailoverSpec()
    codes = spec.statuses()
    if spec.on_timeout:
        codes |= {408}  # a 408 reply is a timeout further down: it fails over like one
    wanted = (codes, spec.max_attempts, spec.on_timeout)
    if wanted == (current.failover_codes, current.max_attempts, current.failover_on_timeout):
        return current
    return dataclasses.replace(
        current,
        failover_codes=codes,
        max_attempts=spec.max_attempts,
        failover_on_timeout=spec.on_timeout,
    )
