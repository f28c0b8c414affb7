"""What selection algorithms may read from a request.

The proxy core implements `SelectionContext` over its parsed SIP request, so
the dispatch layer never imports the SIP message types. `RequestContext` is a
plain implementation for tests, tools and callers that already hold the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["RequestContext", "SelectionContext"]


class SelectionContext(Protocol):
    """The request fields that hash algorithms use as keys."""

    @property
    def call_id(self) -> str: ...

    @property
    def from_uri(self) -> str: ...

    @property
    def to_uri(self) -> str: ...

    @property
    def request_uri(self) -> str: ...

    @property
    def request_uri_user(self) -> str | None: ...

    @property
    def auth_username(self) -> str | None:
        """User name of the Authorization or Proxy-Authorization header."""
        ...

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        ...


@dataclass(frozen=True, slots=True)
class RequestContext:
    """A `SelectionContext` built from plain values."""

    call_id: str
    from_uri: str = ""
    to_uri: str = ""
    request_uri: str = ""
    request_uri_user: str | None = None
    auth_username: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None
