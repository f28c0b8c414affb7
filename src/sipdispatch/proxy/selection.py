"""The dispatch layer's view of a request (``dispatch.context.SelectionContext``).

Hash algorithms need one or two fields of a request; this adapter parses each one only when an
algorithm asks for it, so round-robin pays for nothing.
"""

from __future__ import annotations

import re
from functools import cached_property

from sipdispatch.sip import values
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request, header_key
from sipdispatch.sip.uri import SipUri, parse_uri

__all__ = ["RequestSelection"]

_USERNAME = re.compile(r"""username\s*=\s*"((?:[^"\\]|\\.)*)"|username\s*=\s*([^\s,]+)""", re.I)


def _uri_of(value: str | None) -> str:
    if not value:
        return ""
    try:
        return values.parse_name_addr(value).uri_text
    except RemoteProtocolError:
        return value


class RequestSelection:
    """Implements ``SelectionContext`` lazily over a parsed request."""

    def __init__(self, request: Request) -> None:
        self.request = request

    @property
    def call_id(self) -> str:
        return self.request.call_id

    @cached_property
    def from_uri(self) -> str:
        return _uri_of(self.request.headers.get("from"))

    @cached_property
    def to_uri(self) -> str:
        return _uri_of(self.request.headers.get("to"))

    @property
    def request_uri(self) -> str:
        return self.request.uri

    @cached_property
    def request_uri_user(self) -> str | None:
        uri = parse_uri(self.request.uri)
        return uri.user if isinstance(uri, SipUri) else None

    @cached_property
    def auth_username(self) -> str | None:
        headers = self.request.headers
        value = headers.get("authorization") or headers.get("proxy-authorization")
        if value is None:
            return None
        match = _USERNAME.search(value)
        if match is None:
            return None
        return match.group(1) if match.group(1) is not None else match.group(2)

    def header(self, name: str) -> str | None:
        return self.request.headers.get(header_key(name))
