"""The ``routes`` of the YAML configuration, validated and compiled into `routes.Route`.

::

    routes:                                # ordered, first match wins
      - name: carriers-to-asterisk
        match:
          source: ["198.51.100.0/24"]      # CIDRs or addresses, or "set:2": the members of set 2
          requestUser: "^\\+?4930"          # regex searched in the Request-URI user
          # requestHost: sip.example.com   methods: [INVITE]
          # header: {name: X-Tenant, regex: "^acme$"}
        set: 1
      - name: nobody-else
        reject: {code: 403, reason: Forbidden}
    unrouted: {code: 404, reason: Not Found}   # optional: refuse what no route takes

Each mistake is named by its field (``routes[0].match.requestUser``), so the loader can give
the file and line. That a route's set exists is checked by the whole configuration
(`config.ProxyConfig`), which knows the sets.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from sipdispatch.dispatch import routes as _routes
from sipdispatch.sip import grammar

__all__ = ["HeaderMatchSpec", "MatchSpec", "RejectSpec", "RouteSpec", "parse_source"]

_SET_PREFIX = "set:"


def parse_source(text: str) -> int | _routes.IPNetwork:
    """``set:N`` (a set id) or a CIDR / address; raises ``ValueError``."""
    value = text.strip()
    if value.lower().startswith(_SET_PREFIX):
        number = value[len(_SET_PREFIX) :].strip()
        if not number.isdigit():
            raise ValueError(f"{text!r}: expected set:<id>, such as set:1")
        return int(number)
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is neither a CIDR or IP address nor set:<id>") from None


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class HeaderMatchSpec(_Model):
    name: str = Field(description="Header name, e.g. X-Tenant.")
    regex: str = Field(description="Regular expression searched in the header's first value.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not grammar.HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a header name")
        return value

    _check_regex = field_validator("regex")(_regex)


class MatchSpec(_Model):
    """Every part given must hold; an empty match takes every request."""

    source: list[str] = Field(
        default_factory=list,
        description="Where the request comes from (the packet's address): CIDRs or IP "
        "addresses, or set:N for the members of set N. Sources no route names get 403.",
    )
    methods: list[str] = Field(default_factory=list, description="Request methods, e.g. INVITE.")
    request_user: str | None = Field(
        default=None,
        description="Regular expression searched in the Request-URI's user, e.g. ^\\+?4930.",
    )
    request_host: str | None = Field(
        default=None, description="The Request-URI's host (compared without case)."
    )
    header: HeaderMatchSpec | None = Field(
        default=None, description="A header whose first value must match a regex."
    )

    @field_validator("source")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_source(text)
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        for method in value:
            if not grammar.TOKEN.fullmatch(method):
                raise ValueError(f"{method!r} is not a SIP method")
        return [method.upper() for method in value]

    _check_regex = field_validator("request_user")(_regex)

    def member_sets(self) -> list[int]:
        return [s for s in map(parse_source, self.source) if isinstance(s, int)]

    def compile(self) -> _routes.Match:
        parsed = [parse_source(text) for text in self.source]
        return _routes.Match(
            networks=tuple(s for s in parsed if not isinstance(s, int)),
            member_sets=tuple(s for s in parsed if isinstance(s, int)),
            methods=frozenset(self.methods),
            request_user=None if self.request_user is None else re.compile(self.request_user),
            request_host=None if self.request_host is None else self.request_host.lower(),
            header=None
            if self.header is None
            else (self.header.name, re.compile(self.header.regex)),
        )


class RejectSpec(_Model):
    code: int = Field(ge=300, le=699)
    reason: str = ""

    def refusal(self, cause: str, route: str = "") -> _routes.Refusal:
        return _routes.Refusal(self.code, self.reason or _REASONS.get(self.code, ""), cause, route)


_REASONS = {403: "Forbidden", 404: "Not Found", 480: "Temporarily Unavailable", 603: "Decline"}


class RouteSpec(_Model):
    """One route: a match, then ``set`` or ``reject`` (exactly one of them)."""

    name: str | None = None
    match: MatchSpec = Field(default_factory=MatchSpec)
    set_id: int | None = Field(default=None, alias="set", ge=0)
    reject: RejectSpec | None = None

    @model_validator(mode="after")
    def _one_action(self) -> RouteSpec:
        if (self.set_id is None) == (self.reject is None):
            raise PydanticCustomError(
                "config_issue",
                "{message}",
                {"message": "give either set or reject", "subpath": ("set",)},
            )
        return self

    def compile(self, index: int) -> _routes.Route:
        name = self.name or f"routes[{index}]"
        refusal = None if self.reject is None else self.reject.refusal("route", name)
        return _routes.Route(name, self.match.compile(), self.set_id, refusal)
