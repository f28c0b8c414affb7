"""The custom resources' models: one source for validation, the CRD schema and the status.

``DispatcherSet`` (what users write) reuses the proxy's own configuration models for what the
proxy understands (``DestinationSpec``, ``ProbingSpec``, ``FailoverSpec``, algorithm names), so
a spec that validates here renders into a table the proxy accepts. It adds what only exists in
Kubernetes: ``gateways`` (Services whose EndpointSlices become destinations), the proxy the set
belongs to, and the drain grace. ``DispatcherReport`` is what one proxy replica reports about
the destinations it sees (:mod:`.report`); the operator folds reports into
``DispatcherSetStatus``.

Keys are camelCase (Python names are accepted too); unknown keys are errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from sipdispatch.api.names import API_VERSION, DEFAULT_PROXY, GATEWAY_GRANT, GROUP, VERSION
from sipdispatch.dispatch import config as _config
from sipdispatch.dispatch import routespec as _routespec
from sipdispatch.dispatch import tableconfig as _tableconfig
from sipdispatch.dispatch import uris as _uris

__all__ = [
    "ADMIN_STATES",
    "API_VERSION",
    "DEFAULT_PROXY",
    "GATEWAY_GRANT",
    "GROUP",
    "VERSION",
    "AdminStateSpec",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "DestinationCounts",
    "DestinationStatus",
    "DispatcherSetSpec",
    "DispatcherSetStatus",
    "GatewaySpec",
]


# A DNS-1123 label: Service and proxy names are used as object names.
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# metav1.Condition's own validation (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
_CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
_CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


def _list_map(*keys: str) -> dict[str, Any]:
    """A list whose items are identified by ``keys``: the API server refuses two items with
    the same keys, and server-side apply merges the list item by item."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


ConditionStatus = Literal["True", "False", "Unknown"]

AdminState = Literal["disabled", "draining"]
#: the admin states a DispatcherSet can declare, as Kamailio's two-letter codes show them
ADMIN_STATES: dict[str, str] = {"disabled": "DX", "draining": "DR"}

PortRef = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "description": "Service port name (as in the EndpointSlices) or endpoint port number",
        }
    ),
]


class ApiModel(BaseModel):
    """The base of the resources' models: camelCase keys (Python names too), frozen, strict."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class GatewaySpec(ApiModel):
    """A Service whose EndpointSlices become destinations of the set.

    Every endpoint address of the Service's EndpointSlices is a destination: ready ones are
    active, terminating ones that still serve are draining (no new dialogs), the others are
    left out. Selector-less Services with hand-made EndpointSlices (external gateways) work
    the same way.
    """

    service: str = Field(
        min_length=1,
        max_length=63,
        pattern=_DNS_LABEL,
        description="Name of the Service.",
    )
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=_DNS_LABEL,
        description="Namespace of the Service. Default: the DispatcherSet's. A Service in "
        f"another namespace is used only while it grants it: its annotation {GATEWAY_GRANT} "
        "lists the DispatcherSet's namespace (comma-separated).",
    )
    port: PortRef | None = Field(
        default=None,
        description="Port of the EndpointSlices to send SIP to: its name, or the endpoint "
        "port number. Default: the only port of the slice, else the one named 'sip'.",
    )
    transport: Literal["udp", "tcp"] | None = Field(
        default=None,
        description="Transport to the endpoints (udp or tcp). Default: the port's protocol.",
    )
    priority: int = Field(
        default=0, description="Priority of every destination of this Service (higher first)."
    )
    weight: int = Field(
        default=1,
        ge=0,
        description="Weight of every destination of this Service (algorithms weight, "
        "relative-weight). Default: 1.",
    )

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 0 < value < 65536:
            raise ValueError(f"{value} is not a port number (1-65535)")
        if isinstance(value, str) and not 0 < len(value) <= 63:
            raise ValueError("a port name is 1-63 characters")
        return value


class AdminStateSpec(ApiModel):
    """An operator's hold on one destination of the set, by URI or by the pod behind it.

    What ``sipdispatch-ctl --dispatcherset NAME set-state dx`` writes: every proxy replica
    reads it from the rendered table, so it holds on all of them and across restarts.
    """

    uri: str | None = Field(
        default=None,
        max_length=512,
        description="SIP URI of the destination, a static one or a gateway endpoint, as "
        "the status lists it (sip:10.1.0.5:5060 and sip:10.1.0.5 are one destination).",
    )
    pod: str | None = Field(
        default=None,
        max_length=253,
        description="Name of the pod behind a gateway endpoint (the EndpointSlice's "
        "targetRef): holds whatever address the pod has. Give uri or pod, not both.",
    )
    state: AdminState = Field(
        description="disabled: no new calls and no probes (DX); draining: no new calls, "
        "probed still (DR). Requests within dialogs in progress pass in both."
    )
    reason: str = Field(
        default="",
        max_length=256,
        description="Why, for people: shown as the destination's reason in the status.",
    )

    @field_validator("uri")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is not None:
            _uris.parse_sip_uri(value)
        return value

    @model_validator(mode="after")
    def _one_target(self) -> AdminStateSpec:
        if (self.uri is None) == (self.pod is None):
            raise ValueError("give the destination's uri or its pod (one of them)")
        return self


def _issue(message: str, *subpath: str | int) -> PydanticCustomError:
    # Names the field below the model that raised it (see configfile.validation_issues).
    return PydanticCustomError(
        "config_issue", "{message}", {"message": message, "subpath": subpath}
    )


class DispatcherSetSpec(ApiModel):
    """One destination set of a proxy: static destinations and Services' endpoints."""

    proxy: str = Field(
        default=DEFAULT_PROXY,
        max_length=57,
        pattern=_DNS_LABEL,
        description="Proxy this set belongs to: its table is the ConfigMap '<proxy>-table' in "
        "this namespace, read by every replica of that proxy. Default: sipdispatch.",
    )
    set_id: int = Field(
        ge=0,
        le=2**31 - 1,
        description="Set id, unique among the sets of one proxy (Kamailio's setid).",
    )
    algorithm: _config.AlgorithmName | None = Field(
        default=None,
        description="Selection algorithm: a name (round-robin, hash-callid, hash-from, "
        "hash-to, hash-ruri, hash-auth-user, random, hash-key, priority, weight, call-load, "
        "relative-weight, parallel, latency) or Kamailio's number 0-13. Default: round-robin.",
    )
    hash_key: str | None = Field(
        default=None,
        max_length=128,
        description="What algorithm hash-key hashes: a header name (X-Queue) or a URI part "
        "(ruri.user, from.user, to.user, ...). Required by, and only used by, hash-key.",
    )
    destinations: list[_config.DestinationSpec] = Field(
        default_factory=list,
        max_length=1000,
        description="Static destinations (SIP URIs), in addition to the gateways' endpoints. "
        "Each URI at most once.",
        json_schema_extra=_list_map("uri"),
    )
    gateways: list[GatewaySpec] = Field(
        default_factory=list,
        max_length=64,
        description="Services whose EndpointSlices become destinations. Each Service at most once.",
        json_schema_extra=_list_map("service"),
    )
    admin_states: list[AdminStateSpec] = Field(
        default_factory=list,
        max_length=1000,
        description="Destinations taken out by an operator (disabled or draining), "
        "followed by every proxy replica and kept across restarts. Written by "
        "'sipdispatch-ctl --dispatcherset NAME set-state'; a GitOps source that does not "
        "own this field leaves it alone (see docs/operator.md).",
    )
    probing: _config.ProbingSpec | None = Field(
        default=None,
        description="OPTIONS probing and health thresholds. The proxy applies one probing "
        "policy to all its sets: the one of the set with the lowest id that gives one.",
    )
    failover: _config.FailoverSpec | None = Field(
        default=None,
        description="Which answers make the proxy try the next destination. Proxy-wide, "
        "like probing: taken from the set with the lowest id that gives one.",
    )
    drain_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=86400,
        description="How long a destination whose endpoint is gone stays in the table as "
        "draining (DR: in-dialog requests pass, no new dialogs) before it is removed. "
        "Default: 30.",
    )
    match: _routespec.MatchSpec | None = Field(
        default=None,
        description="Which requests this set takes (the proxy's routes): every part given "
        "must hold. Sets without a match take what no match takes, through the proxy's "
        "default set. A request is never sent back into the set it came from.",
    )
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="Order of this set's match among the sets of its proxy: higher first, "
        "equal priorities by set id. Default: 0.",
    )
    missing_hash_key: Literal["fallback", "reject"] = Field(
        default=_tableconfig.MISSING_KEY_DEFAULT,
        description="A request without the hash key of algorithm hash-key: hashed by its "
        "Call-ID (fallback, counted and logged) or refused with 400 (reject).",
    )
    tls: _config.TlsClientSpec | None = Field(
        default=None,
        description="How the certificates of this set's TLS destinations (sips: or "
        "transport=tls) are verified: verify (default on), caFile (a path in the proxy's "
        "container), serverName (SNI). Default: verified against the system's CAs.",
    )

    @model_validator(mode="after")
    def _one_admin_state_each(self) -> DispatcherSetSpec:
        seen: dict[str, int] = {}
        for index, held in enumerate(self.admin_states):
            field = "uri" if held.uri is not None else "pod"
            key = f"uri {_uris.parse_sip_uri(held.uri)}" if held.uri else f"pod {held.pod}"
            if key in seen:
                message = f"same destination as adminStates[{seen[key]}]"
                raise _issue(message, "adminStates", index, field)
            seen[key] = index
        return self


class Condition(ApiModel):
    """A Kubernetes condition, validated like metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=_CONDITION_TYPE,
        description="Ready, Reconciling, Stalled or Degraded.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=_CONDITION_REASON,
        description="One CamelCase word saying why.",
    )
    message: str = Field(max_length=32768, description="What happened, for people.")
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The generation of the spec this condition is about."
    )


class DestinationStatus(ApiModel):
    """One destination as the proxy replicas see it."""

    uri: str = Field(description="SIP URI of the destination.")
    origin: str = Field(
        description="Where it comes from: 'static', 'pod/NAME' (an endpoint backed by a pod) "
        "or 'service/NAME' (an endpoint of a selector-less Service)."
    )
    state: str = Field(
        description="Two-letter state seen by most replicas (AP, AX, TP, TX, IP, IX, DX, DR); "
        "Unknown before any replica reported it, NotReady for endpoints left out of the table."
    )
    eligible: bool = Field(
        default=False,
        description="Whether the replicas reporting that state send new calls here, as "
        "their selection decides (AX is both coming up, not eligible, and active, eligible).",
    )
    reason: str = Field(default="", description="Why it is in that state.")
    last_change: str | None = Field(
        default=None, description="When its state last changed (RFC 3339)."
    )
    latency_ms: float | None = Field(
        default=None,
        description="Estimated round trip of OPTIONS probes, in milliseconds, as the "
        "replicas reporting its state see it; absent unless it is up or draining.",
    )
    seen_by: int = Field(default=0, description="How many replicas report this state.")
    name: str | None = Field(
        default=None,
        description="For a destination named by DNS: the name as configured. Each address "
        "it resolves to is a destination of its own under it; a name without addresses is "
        "shown itself, state IX, with the DNS failure as reason.",
    )


class DestinationCounts(ApiModel):
    """How many destinations are in each group of states."""

    total: int = Field(default=0, description="Destinations in the table.")
    up: int = Field(default=0, description="Eligible for new calls, as the proxy replicas decide.")
    draining: int = Field(default=0, description="Draining (DR).")
    down: int = Field(
        default=0,
        description="Neither eligible, draining nor disabled: inactive (IP, IX) or coming "
        "up (AX below the success threshold).",
    )
    disabled: int = Field(default=0, description="Administratively disabled (DX).")
    unknown: int = Field(default=0, description="Not reported by any replica yet.")
    not_ready: int = Field(default=0, description="Endpoints left out because not ready.")


class DispatcherSetStatus(ApiModel):
    """What the operator and the proxy replicas observe about the set."""

    observed_generation: int | None = Field(
        default=None, description="The generation of the spec last processed."
    )
    algorithm: str | None = Field(default=None, description="The algorithm in use (its name).")
    up_total: str | None = Field(
        default=None,
        description="Destinations eligible for new calls over destinations in the table, "
        "as 'up/total'.",
    )
    replicas: int = Field(default=0, description="Proxy replicas whose reports are current.")
    counts: DestinationCounts = Field(
        default_factory=DestinationCounts, description="Destinations by state."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Reconciling, Stalled and Degraded (kstatus reads Reconciling "
        "and Stalled).",
        json_schema_extra=_list_map("type"),
    )
    destinations: list[DestinationStatus] = Field(
        default_factory=list, description="Every destination with its state."
    )
    takes: str | None = Field(
        default=None,
        description="Which requests the set takes, from its match as the table carries it "
        "('unmatched': only what no match takes, when it is the proxy's default set).",
    )
    call_load: str | None = Field(
        default=None,
        description="How the maxLoad of this set's destinations adds up over the proxy "
        "replicas (each replica counts its own calls), when a destination has one.",
    )


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as the API wants it: camelCase, no unset optional fields."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")
