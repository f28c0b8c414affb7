"""The proxy's YAML configuration model (also the spec model of the custom resource).

Keys are camelCase, as kubectl users expect (`defaultSet`, `maxLoad`,
`failureThreshold`); the snake_case Python names are accepted too. Unknown
keys are errors. A minimal file::

    listen: ["udp:0.0.0.0:5060"]
    sets:
      - id: 1
        algorithm: round-robin        # or Kamailio's number: 4
        destinations:
          - uri: sip:10.0.0.5:5060
          - uri: sip:10.0.0.6:5060
            weight: 2

Times are seconds. `configfile.load_config` reads a file and reports errors
with file, line and field path.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from sipdispatch.dispatch import algorithms as _algorithms
from sipdispatch.dispatch import codes as _codes
from sipdispatch.dispatch import health as _health
from sipdispatch.dispatch import keys as _keys
from sipdispatch.dispatch import routes as _routes
from sipdispatch.dispatch import routespec as _routespec
from sipdispatch.dispatch import tableconfig as _tableconfig
from sipdispatch.dispatch import uris as _uris
from sipdispatch.dispatch.codes import code_matches, expand_codes

__all__ = [
    "DestinationSpec",
    "FailoverSpec",
    "ProbingSpec",
    "ProxyConfig",
    "SetSpec",
    "TlsClientSpec",
    "TlsListenerSpec",
    "code_matches",
    "expand_codes",
]

_INT_OR_STRING: dict[str, Any] = {"x-kubernetes-int-or-string": True}

#: the health defaults, declared by the health layer (the hot path reads them from there)
_POLICY = _health.HealthPolicy()


def _issue(message: str, *subpath: str | int) -> PydanticCustomError:
    # Lets a model-level check name the field it is about: the loader joins
    # `subpath` to the location of the model that raised it.
    return PydanticCustomError(
        "config_issue", "{message}", {"message": message, "subpath": subpath}
    )


def _algorithm(value: object) -> str:
    if not isinstance(value, int | str):
        raise ValueError("expected an algorithm name or number")
    return _algorithms.resolve(value)


def _probing_mode(value: object) -> str:
    if not isinstance(value, int | str):
        raise ValueError("expected a probing mode name or number")
    return _health.ProbingMode.parse(value).value


def _is_code_class(text: str) -> bool:
    """``1xx`` to ``6xx``: a class of status codes, Kamailio's notation in reply code lists."""
    return len(text) == 3 and text[0] in "123456" and text[1:] == "xx"


def _reply_code(value: object) -> str:
    """A status code (`200`) or class (`"2xx"`), kept as a string."""
    text = str(value).strip().lower() if isinstance(value, int | str) else ""
    if isinstance(value, bool) or not (
        _is_code_class(text) or (text.isdigit() and 100 <= int(text) <= 699)
    ):
        raise ValueError(f"{value!r} is not a status code (100-699) or class ('2xx')")
    return text


AlgorithmName = Annotated[
    str,
    BeforeValidator(_algorithm),
    WithJsonSchema({**_INT_OR_STRING, "description": "algorithm name or Kamailio number"}),
]
ProbingModeName = Annotated[
    str,
    BeforeValidator(_probing_mode),
    WithJsonSchema({**_INT_OR_STRING, "description": "failed|all|inactive|flagged|off or 0-3"}),
]
ReplyCode = Annotated[
    str,
    BeforeValidator(_reply_code),
    WithJsonSchema({**_INT_OR_STRING, "description": "status code or class such as 2xx"}),
]


def _failover_code(code: str) -> str:
    if code[0] not in "45":
        # 1xx-3xx are not failures; a 6xx is a global failure that must
        # reach the caller (RFC 3261 16.7).
        raise ValueError(f"{code!r}: only 4xx and 5xx answers can trigger failover")
    return code


FailoverCode = Annotated[ReplyCode, AfterValidator(_failover_code)]


def _listener(value: str) -> _uris.ListenAddress:
    listen = _uris.parse_listen(value)
    address = listen.socket
    if address.transport not in ("udp", "tcp", "tls"):
        raise ValueError(f"{value!r}: listeners are udp, tcp or tls")
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        raise ValueError(f"{value!r}: listen on an IP address, not a host name") from None
    return listen


Listen = Annotated[str, AfterValidator(lambda value: str(_listener(value)))]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class DestinationSpec(_Model):
    """One static destination of a set."""

    uri: str
    priority: int = 0
    weight: int = Field(default=1, ge=0)
    rweight: int | None = Field(default=None, ge=0)
    max_load: int = Field(default=0, ge=0)
    duid: str | None = None
    socket: str | None = None
    ping_from: str | None = None
    disabled: bool = False
    draining: bool = False
    attrs: dict[str, str] = Field(default_factory=dict)

    @field_validator("uri", "ping_from")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is not None:
            _uris.parse_sip_uri(value)
        return value

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: str | None) -> str | None:
        return None if value is None else str(_uris.parse_socket(value))

    @model_validator(mode="after")
    def _attrs_have_no_fields(self) -> DestinationSpec:
        for name in self.attrs:
            if name in _FIELD_ATTRS:
                field = _FIELD_ATTRS[name]
                raise _issue(f"{name!r} has its own field: use {field}", "attrs", name)
        return self

    def to_destination(self, set_id: int) -> _tableconfig.Destination:
        return _tableconfig.Destination.create(
            set_id,
            self.uri,
            priority=self.priority,
            attrs=self.attrs,
            weight=self.weight,
            rweight=self.rweight,
            duid=self.duid,
            maxload=self.max_load,
            socket=self.socket,
            ping_from=self.ping_from,
            disabled=self.disabled,
            draining=self.draining,
        )


_FIELD_ATTRS = {
    "weight": "weight",
    "rweight": "rweight",
    "maxload": "maxLoad",
    "duid": "duid",
    "socket": "socket",
    "ping_from": "pingFrom",
}


class TlsClientSpec(_Model):
    """How a set's TLS destinations (``sips:`` or ``transport=tls``) are verified."""

    verify: bool = Field(
        default=True,
        description="Check the destinations' certificates (chain and name). Off: any "
        "certificate is accepted (encryption without authentication). Default: on.",
    )
    ca_file: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="CA bundle (PEM file, a path on the proxy) the certificates must chain "
        "to. Default: the system's CAs.",
    )
    server_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name sent as SNI and expected in the certificates. Default: each "
        "destination's host.",
    )

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        return None if value is None else _uris.parse_host(value)

    def verification(self) -> _tableconfig.TlsVerification:
        return _tableconfig.TlsVerification(self.verify, self.ca_file, self.server_name)


class TlsListenerSpec(_Model):
    """The certificate of the proxy's TLS listeners (files, re-read when they change)."""

    cert_file: str = Field(min_length=1, max_length=4096)
    key_file: str = Field(min_length=1, max_length=4096)


class SetSpec(_Model):
    id: int = Field(ge=0)
    algorithm: AlgorithmName | None = None
    hash_key: str | None = None
    #: a request without the hash key: hashed by its Call-ID (counted, logged), or refused (400)
    missing_hash_key: Literal["fallback", "reject"] = _tableconfig.MISSING_KEY_DEFAULT
    destinations: list[DestinationSpec] = Field(default_factory=list)
    #: verification of the set's TLS destinations; None: verified against the system's CAs
    tls: TlsClientSpec | None = None

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, value: str | None) -> str | None:
        if value is not None:
            _keys.parse(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> SetSpec:
        if self.algorithm == "hash-key" and not self.hash_key:
            raise _issue("required by algorithm hash-key (a header or ruri.user, ...)", "hashKey")
        if self.hash_key and self.algorithm not in (None, "hash-key"):
            raise _issue(f"only used by algorithm hash-key, not {self.algorithm}", "hashKey")
        seen: dict[str, int] = {}
        for i, spec in enumerate(self.destinations):
            key = _uris.normalise(spec.uri)
            if key in seen:
                raise _issue(
                    f"same destination as destinations[{seen[key]}]", "destinations", i, "uri"
                )
            seen[key] = i
        return self

    def to_set_config(self, default_algorithm: str | int) -> _tableconfig.SetConfig:
        return _tableconfig.SetConfig(
            self.id,
            tuple(spec.to_destination(self.id) for spec in self.destinations),
            self.algorithm or _algorithms.resolve(default_algorithm),
            self.hash_key,
            self.missing_hash_key,
            None if self.tls is None else self.tls.verification(),
        )


class ProbingSpec(_Model):
    """OPTIONS probing and the health thresholds it feeds."""

    mode: ProbingModeName = _POLICY.mode.value
    interval: float = Field(default=10.0, gt=0)
    timeout: float = Field(default=2.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, lt=1)  # +/- fraction of the interval
    failure_threshold: int = Field(default=_POLICY.failure_threshold, ge=1)
    success_threshold: int = Field(default=_POLICY.success_threshold, ge=1)
    reply_codes: list[ReplyCode] = Field(default_factory=lambda: ["2xx"], min_length=1)
    from_: str = Field(default="sip:sipdispatch@localhost", alias="from")
    #: replies to calls that count against their destination, like a failed probe (passive
    #: marking). Timeouts and transport errors always count; a reply proves the box alive, so
    #: none does by default, and a 487 or any reply to a CANCELled call never does.
    passive_codes: list[FailoverCode] = Field(default_factory=list)
    #: the longest drain a 503's Retry-After may ask for, in seconds (longer ones are cut)
    max_retry_after: float = Field(default=300.0, gt=0)

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        _uris.parse_sip_uri(value)
        return value

    @model_validator(mode="after")
    def _timeout_fits(self) -> ProbingSpec:
        if self.timeout > self.interval:
            raise _issue(f"{self.timeout:g}s is longer than the interval", "timeout")
        return self

    def policy(self) -> _health.HealthPolicy:
        return _health.HealthPolicy(
            self.failure_threshold, self.success_threshold, _health.ProbingMode(self.mode)
        )

    def accepts(self, status: int) -> bool:
        return code_matches(self.reply_codes, status)


class FailoverSpec(_Model):
    """Which answers make the proxy try the next destination."""

    # The proxy core starts from the same defaults (``CoreSettings``): both read ``codes.py``.
    codes: list[FailoverCode] = Field(default_factory=lambda: list(_codes.FAILOVER_CODES))
    on_timeout: bool = _codes.FAILOVER_ON_TIMEOUT
    max_attempts: int = Field(default=_codes.MAX_ATTEMPTS, ge=1)

    def triggers(self, status: int) -> bool:
        return code_matches(self.codes, status)

    def statuses(self) -> frozenset[int]:
        """The failover codes as a set of ints (classes expanded)."""
        return expand_codes(self.codes)


class ProxyConfig(_Model):
    listen: list[Listen] = Field(default_factory=lambda: ["udp:0.0.0.0:5060"], min_length=1)
    advertise: str | None = None
    #: certificate and key of the tls listeners (``--tls-cert``/``--tls-key`` win)
    tls: TlsListenerSpec | None = None
    default_set: int | None = None
    sets: list[SetSpec] = Field(default_factory=list)
    probing: ProbingSpec = Field(default_factory=ProbingSpec)
    failover: FailoverSpec = Field(default_factory=FailoverSpec)
    #: which set takes a request (``routespec``); none: the default set takes every one
    routes: list[_routespec.RouteSpec] = Field(default_factory=list)
    #: refuse a request no route takes; unset: the default set takes it
    unrouted: _routespec.RejectSpec | None = None

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, value: str | None) -> str | None:
        if value is not None:
            _uris.parse_hostport(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> ProxyConfig:
        first: dict[int, int] = {}
        for i, spec in enumerate(self.sets):
            if spec.id in first:
                raise _issue(
                    f"set {spec.id} is already defined by sets[{first[spec.id]}]", "sets", i, "id"
                )
            first[spec.id] = i
        if self.default_set is not None and self.default_set not in first:
            raise _issue(f"set {self.default_set} is not defined in sets", "defaultSet")
        self._check_routes(set(first))
        return self

    def _check_routes(self, set_ids: set[int]) -> None:
        names: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            if route.name is not None:
                if route.name in names:
                    raise _issue(
                        f"already the name of routes[{names[route.name]}]", "routes", i, "name"
                    )
                names[route.name] = i
            if route.set_id is not None and route.set_id not in set_ids:
                raise _issue(f"set {route.set_id} is not defined in sets", "routes", i, "set")
            for j, text in enumerate(route.match.source):
                source = _routespec.parse_source(text)
                if isinstance(source, int) and source not in set_ids:
                    raise _issue(
                        f"set {source} is not defined in sets", "routes", i, "match", "source", j
                    )

    def routing(self) -> _routes.RoutingConfig | None:
        """The compiled routes; None when there are none (every request to the default set)."""
        if not self.routes and self.unrouted is None:
            return None
        unrouted = None if self.unrouted is None else self.unrouted.refusal("unrouted")
        routes = tuple(route.compile(i) for i, route in enumerate(self.routes))
        return _routes.RoutingConfig(routes, unrouted)

    def listeners(self) -> list[_uris.ListenAddress]:
        return [_listener(value) for value in self.listen]

    def health_policy(self) -> _health.HealthPolicy:
        return self.probing.policy()

    def to_table_config(
        self, default_algorithm: str | int = _tableconfig.DEFAULT_ALGORITHM
    ) -> _tableconfig.TableConfig:
        """The table configuration; sets without an algorithm get `default_algorithm`."""
        return _tableconfig.TableConfig(
            tuple(spec.to_set_config(default_algorithm) for spec in self.sets),
            self.default_set,
            self.routing(),
        )
