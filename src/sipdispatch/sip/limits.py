"""Bounds on what one message may cost, checked on its bytes before it is parsed.

Parsing is the expensive part of a message: a datagram of a few thousand tiny header lines
costs two hundred times a normal INVITE. ``codec.parse`` therefore checks the raw bytes first
(length, line count, longest line), with C-speed ``bytes`` methods and no per-line Python work
for a message of ordinary size, before it reads a single header; ``check_lists`` bounds the
list headers (Via, Route, Record-Route) before any of their values is read, and runs only when
the header section holds more lines and commas than the shortest list bound. Each failure is a
``LimitExceededError`` naming the limit, answered 513 (RFC 3261 21.5.14) for size and 400 with a
reason phrase naming the limit otherwise.

``salvage`` reads just the header fields an error response copies, so that a message refused
before parsing can still be answered without parsing all of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Header, Headers, Request, header_key

__all__ = [
    "LimitExceededError",
    "MessageLimits",
    "check_head",
    "check_lists",
    "salvage",
    "too_large",
]


# A record read on every message: a hand-written __init__, as in values.py, for mypyc.
@dataclass(slots=True, init=False, unsafe_hash=True)
class MessageLimits:
    """How large a message may be; each default fits every real call flow seen with margin."""

    #: bytes of one message (a UDP datagram, or a framed TCP message with its body)
    max_message_size: int
    #: header lines, continuation lines included (a normal INVITE has 10 to 30)
    max_headers: int
    #: bytes of one header line (a STIR/SHAKEN Identity header is about 1,000)
    max_line_length: int
    #: elements of the Via list: one per hop so far, and Max-Forwards starts at 70
    max_via: int
    #: elements of the Route list, and of the Record-Route list, each
    max_route: int
    #: the smaller list bound: a header section with fewer lines and commas is within both
    shortest_list: int

    def __init__(
        self,
        max_message_size: int = 16384,
        max_headers: int = 100,
        max_line_length: int = 4096,
        max_via: int = 70,
        max_route: int = 32,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_headers = max_headers
        self.max_line_length = max_line_length
        self.max_via = max_via
        self.max_route = max_route
        self.shortest_list = min(max_via, max_route)


class LimitExceededError(RemoteProtocolError):
    """A message over one of the `MessageLimits`; ``limit`` names it (for metrics)."""

    def __init__(self, limit: str, message: str, status: int = 400, reason: str = "") -> None:
        super().__init__(message, status, reason or None)
        self.limit = limit


def too_large(size: int, limits: MessageLimits) -> LimitExceededError:
    """The error for a message of ``size`` bytes over the size limit (513, RFC 3261 21.5.14)."""
    return LimitExceededError(
        "message-size",
        f"message of {size} bytes over the limit of {limits.max_message_size}",
        513,
        "Message Too Large",
    )


def check_head(head: bytes, lines: int, limits: MessageLimits) -> None:
    """Raise ``LimitExceededError`` when a header section of ``lines`` lines has too many of
    them or one too long. Worth calling only when ``lines`` or ``len(head)`` is over a limit."""
    if lines > limits.max_headers:
        raise LimitExceededError(
            "header-count",
            f"{lines} header lines over the limit of {limits.max_headers}",
            reason="Too Many Headers",
        )
    longest = limits.max_line_length
    if len(head) > longest and max(map(len, head.split(b"\n"))) > longest + 1:  # + its CR
        raise LimitExceededError(
            "line-length",
            f"a header line over the limit of {longest} bytes",
            reason="Header Line Too Long",
        )


#: the list headers bounded, with the limit and reason phrase for each
_LISTS: Final = (
    ("via", "via-count", "Too Many Via Entries"),
    ("route", "route-count", "Too Many Route Entries"),
    ("record-route", "record-route-count", "Too Many Record-Route Entries"),
)


def check_lists(headers: Headers, limits: MessageLimits) -> None:
    """Raise ``LimitExceededError`` when a Via, Route or Record-Route list is too long.

    Meant for messages with more header lines and commas than ``limits.shortest_list``. Counts
    header fields and commas first, which never under-counts; only a list that may be too long
    is split properly (commas inside quotes or ``<>`` do not separate elements).
    """
    counts: dict[str, int] = {}
    for key, _, value in headers:
        if key in ("via", "route", "record-route"):
            counts[key] = counts.get(key, 0) + 1 + value.count(",")
    if not counts:
        return
    for key, limit, reason in _LISTS:
        bound = limits.max_via if key == "via" else limits.max_route
        if counts.get(key, 0) > bound:
            found = len(headers.values(key))
            if found > bound:
                raise LimitExceededError(
                    limit, f"{found} {key} entries over the limit of {bound}", reason=reason
                )


#: the header fields an error response copies (RFC 3261 8.2.6.2), long and compact names
_COPIED_LINE: Final = re.compile(
    rb"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*([^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
#: what a salvaged value may hold at most: an answer is never much larger than its request
_SALVAGE_VALUE: Final = 1024


def salvage(data: bytes) -> Request | None:
    """The request line and the first of each header an answer copies, or None when the
    bytes are not a request. For answering a message refused before it was parsed."""
    first_end = data.find(b"\n")
    start = data[: first_end if first_end >= 0 else len(data)].strip()
    method, space, _ = start.partition(b" ")
    if not space or start.startswith(b"SIP/") or not method.isalpha():
        return None
    items: list[Header] = []
    seen: set[str] = set()
    head_end = data.find(b"\r\n\r\n")
    for match in _COPIED_LINE.finditer(data, 0, head_end if head_end >= 0 else len(data)):
        name = match.group(1).decode("ascii")
        key = header_key(name)
        if key in seen:
            continue
        seen.add(key)
        value = match.group(2)[:_SALVAGE_VALUE].decode("utf-8", "surrogateescape")
        items.append((key, name, value.strip(" \t")))
    return Request(method.decode("ascii"), "", Headers(items))
