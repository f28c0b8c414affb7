"""Hash keys: which part of a request a hash algorithm hashes.

Algorithm 7 (hash-key) takes its key from configuration, the equivalent of
Kamailio's `hash_pvar`: a URI part such as ``ruri.user`` or ``from.user``,
or the name of a header (``X-Queue``), whose first value is hashed. URIs
are reduced to ``user@host`` so that a changing tag, port or parameter does
not move a caller (the ``From`` *header* carries a per-call tag, which is
why ``from`` means the From URI, never the raw header).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sipdispatch.dispatch import context as _context
from sipdispatch.sip import grammar

__all__ = [
    "FROM_URI",
    "PARTS",
    "RURI",
    "RURI_USER",
    "TO_URI",
    "HashKey",
    "parse",
    "uri_user_host",
]


def uri_user_host(value: str) -> str:
    """The `user@host` identity of a URI or name-addr, for hashing.

    Accepts a bare URI or a header value with a display name and `<...>`;
    drops the scheme, port, parameters and headers, and folds the host's
    case, so that the same caller hashes the same however the URI is dressed.
    Never fails: a request that made it this far is hashed whatever it holds.
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


def _user(identity: str) -> str | None:
    user, sep, _ = identity.rpartition("@")
    return user if sep and user else None


def _host(identity: str) -> str:
    return identity.rpartition("@")[2]


def _ruri_user(ctx: _context.SelectionContext) -> str | None:
    return ctx.request_uri_user or _user(uri_user_host(ctx.request_uri))


@dataclass(frozen=True, slots=True)
class HashKey:
    """A named way to get a string key out of a request (None if absent)."""

    name: str
    _get: Callable[[_context.SelectionContext], str | None]

    def extract(self, ctx: _context.SelectionContext) -> str | None:
        value = self._get(ctx)
        return value.strip() if value else None


def _from(ctx: _context.SelectionContext) -> str:
    return uri_user_host(ctx.from_uri) if ctx.from_uri else ""


def _to(ctx: _context.SelectionContext) -> str:
    return uri_user_host(ctx.to_uri) if ctx.to_uri else ""


def _ruri(ctx: _context.SelectionContext) -> str:
    return uri_user_host(ctx.request_uri) if ctx.request_uri else ""


FROM_URI: Final = HashKey("from", _from)
TO_URI: Final = HashKey("to", _to)
RURI: Final = HashKey("ruri", _ruri)
RURI_USER: Final = HashKey("ruri.user", _ruri_user)

PARTS: Final[dict[str, HashKey]] = {
    key.name: key
    for key in (
        HashKey("call-id", lambda ctx: ctx.call_id),
        RURI,
        RURI_USER,
        HashKey("ruri.host", lambda ctx: _host(_ruri(ctx)) or None),
        FROM_URI,
        HashKey("from.user", lambda ctx: _user(_from(ctx))),
        HashKey("from.host", lambda ctx: _host(_from(ctx)) or None),
        TO_URI,
        HashKey("to.user", lambda ctx: _user(_to(ctx))),
        HashKey("to.host", lambda ctx: _host(_to(ctx)) or None),
        HashKey("auth.user", lambda ctx: ctx.auth_username),
    )
}
_ALIASES: Final = {"callid": "call-id", "from.uri": "from", "to.uri": "to", "ruri.uri": "ruri"}


def parse(text: str) -> HashKey:
    """A URI part from `PARTS` (case-insensitive) or a header name."""
    spec = text.strip()
    lowered = _ALIASES.get(spec.lower(), spec.lower())
    if lowered in PARTS:
        return PARTS[lowered]
    if spec.lower().startswith("header:"):
        spec = spec[len("header:") :].strip()
    elif lowered.partition(".")[0] in _URI_PREFIXES:
        # `ruri.usr`: a typo of a URI part, not a header that would never
        # exist (every request would quietly fall back to Call-ID).
        raise ValueError(f"{text!r} is not a known URI part; expected one of: {', '.join(PARTS)}")
    if not grammar.HEADER_NAME.fullmatch(spec):
        parts = ", ".join(PARTS)
        raise ValueError(f"{text!r} is neither a header name nor one of: {parts}")
    name = spec
    return HashKey(f"header:{name}", lambda ctx: ctx.header(name))


_URI_PREFIXES: Final = frozenset({"ruri", "from", "to", "auth"})
