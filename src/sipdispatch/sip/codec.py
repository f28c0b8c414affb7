"""Bytes to messages and back: the SIP framing of RFC 3261 sections 7 and 18.3.

``parse`` reads one message: start line, header fields (unfolded, names as tokens) and the body
framed by Content-Length. It checks only what framing needs; ``validation`` checks the rest.
``StreamFramer`` cuts a TCP byte stream into messages, with a size bound: a message over it
whose header section is complete is passed on without its body (``parse`` then says 513) and
the stream goes on after the body; one whose Content-Length cannot be read is passed on as its
header section (``parse`` says 400) and the stream goes on after that.

Written by hand: no maintained Python SIP parser is fast enough for a proxy's hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sipdispatch.sip import grammar
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.limits import MessageLimits, check_head, check_lists, too_large
from sipdispatch.sip.memo import remember
from sipdispatch.sip.message import Header, Headers, Request, Response, header_key

__all__ = [
    "MAX_MESSAGE_SIZE",
    "ControlCharacterError",
    "MessageError",
    "StreamFramer",
    "is_keepalive",
    "parse",
]

#: bound on one message over a stream; UDP datagrams are bounded by the transport itself
MAX_MESSAGE_SIZE: Final = 65535
#: what ``parse`` holds a message to unless told otherwise: the largest a datagram can be
_UNLIMITED: Final = MessageLimits(
    MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE, 1 << 20, 1 << 20
)


class MessageError(RemoteProtocolError):
    """A framing error that still carries what could be read, so that a request can be answered."""

    def __init__(self, message: str, partial: Request | Response | None, status: int = 400) -> None:
        super().__init__(message, status)
        self.partial = partial


class ControlCharacterError(MessageError):
    """A request whose header section holds a control character other than HTAB and its line
    ends (a bare CR or LF, NUL...); ``partial`` is the whole request, parsed."""

    def __init__(self, request: Request) -> None:
        super().__init__("control character in the header section", request)
        self.request = request


def is_keepalive(data: bytes) -> bool:
    """CRLF keep-alives (RFC 5626 3.5.1) and stray empty lines carry no message."""
    return not data.strip(b"\r\n")


def _head_end(data: bytes) -> int:
    """Where the blank line after the header section starts, or -1; the reference of
    ``_lines.c``'s ``head_end``, which the compiled build runs instead."""
    return data.find(b"\r\n\r\n")


def _split_head(data: bytes, datagram: bool) -> tuple[bytes, int]:
    """Return the header section and the offset of the body."""
    end = _HEAD_END(data)
    if end >= 0:
        return data[:end], end + 4
    end = data.find(b"\n\n")
    if end >= 0:  # bare-LF senders exist; RFC 3261 7.5 asks for tolerance of this
        return data[:end], end + 2
    if datagram:
        # A datagram whose header section ends with the datagram (no empty line).
        return data.rstrip(b"\r\n"), len(data)
    raise RemoteProtocolError("incomplete header section")


_LINE_ENDS: Final = (b"\r", b"\n")

#: header names already checked against the grammar, with their look-up keys
_KNOWN_NAMES: Final[dict[str, tuple[str, str]]] = {}


def _parse_headers(lines: list[str]) -> Headers:
    items: list[Header] = []
    read: list[str | None] = []  # the line of each item, to forward it unchanged
    # The look-up index of ``Headers``, built in the same pass.
    first: dict[str, str] = {}
    repeated: set[str] = set()
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # Folded continuation (RFC 3261 7.3.1): joins the previous value with one SP.
            if not items:
                raise RemoteProtocolError("continuation line before any header")
            key, name, value = items[-1]
            value = f"{value} {line.strip()}".strip()
            items[-1] = (key, name, value)
            read[-1] = None  # written unfolded
            if key not in repeated:  # the field folded is its key's first
                first[key] = value
            continue
        header = _LINES.get(line)
        if header is None:
            header = remember(_LINES, line, _parse_line(line))
        key = header[0]
        items.append(header)
        read.append(line)
        if key in first:
            repeated.add(key)
        else:
            first[key] = header[2]
    return Headers(items, first, repeated, read)


#: whole header lines read already: half the lines of a call (Max-Forwards, Contact, Allow,
#: Content-Type, a trunk's To...) come back in every call, and one look-up of the line replaces
#: cutting, naming and stripping it
_LINES: Final[dict[str, Header]] = {}


def _parse_line(line: str) -> Header:
    colon = line.find(":")
    if colon <= 0:
        raise RemoteProtocolError(f"header line without a name: {line[:60]!r}")
    raw = line[:colon]
    known = _KNOWN_NAMES.get(raw)
    if known is None:
        name = raw.rstrip(" \t")
        if not grammar.HEADER_NAME.fullmatch(name):
            raise RemoteProtocolError(f"bad header name {name!r}")
        known = (header_key(name), name)
        if len(_KNOWN_NAMES) < 4096:  # bounded: names come from the network
            _KNOWN_NAMES[raw] = known
    return (known[0], known[1], line[colon + 1 :].strip(" \t"))


#: the parts of ``Headers`` as ``_parse_headers`` builds them
_Parts = tuple[list[Header], dict[str, str], set[str], list[str | None]]
_Scan = Callable[[str, int, str, Callable[[str], Header]], _Parts | None]
#: (crlf, line ends, commas, control bytes) of a header section
_Measures = tuple[bool, int, int, int]
_Measure = Callable[[bytes, bool], _Measures]
_HeadEnd = Callable[[bytes], int]


def _load_native() -> tuple[_Scan | None, _Measure | None, _HeadEnd]:
    """The C loop over header lines, the C count of a header section's bytes and the C search
    for its end (``_lines.c``), built with the compiled hot path; the pure Python build has
    ``_parse_headers``, ``_measure_text`` and ``_head_end``, which are also the references the
    C code is tested against."""
    try:
        from sipdispatch.sip import _lines  # noqa: PLC0415 - optional, native builds only
    except ImportError:
        return (None, None, _head_end)
    return (_lines.scan, _lines.measure, _lines.head_end)


_NATIVE: Final = _load_native()
_SCAN: Final = _NATIVE[0]
_MEASURE: Final = _NATIVE[1]
_HEAD_END: Final = _NATIVE[2]


def _measure_text(head: bytes, text: str, controls: bool) -> _Measures:
    """What ``parse`` checks before it reads the header section ``head`` (decoded: ``text``):
    whether its lines end in CR LF, how many line ends it has, how many commas and, when
    ``controls`` asks (else 0), how many control bytes. String counts and a translate are C
    loops; ``_lines.measure`` does the same with fewer passes and no copy."""
    crlf = "\r\n" in text
    return (
        crlf,
        text.count("\r\n" if crlf else "\n"),
        text.count(","),
        len(head) - len(head.translate(None, grammar.CONTROL_BYTES)) if controls else 0,
    )


def _headers(text: str, start: int, separator: str) -> Headers:
    """The header fields of ``text[start:]``, lines cut at ``separator``."""
    if _SCAN is not None:
        parts = _SCAN(text, start, separator, _parse_line)
        if parts is not None:  # None: a folded line, or characters over one byte
            return Headers(parts[0], parts[1], parts[2], parts[3])
    return _parse_headers(text[start:].split(separator))


def _content_length(headers: Headers) -> int | None:
    text = headers.get("content-length")
    if text is None:
        return None
    if headers.repeated("content-length"):
        values = headers.get_all("content-length")
        if len(set(values)) > 1:
            raise RemoteProtocolError(f"conflicting Content-Length values {values}")
    if len(text) > 10 or not grammar.is_digits(text):
        raise RemoteProtocolError(f"bad Content-Length {text!r}")
    return grammar.number(text)


#: request methods already checked against the grammar (a proxy sees a handful)
_METHODS: Final[dict[str, bool]] = {}


#: start lines read already, as (status, reason, version) and (method, URI, version): a
#: proxy sees "SIP/2.0 200 OK" and a trunk's request lines again and again
_STATUS_LINES: Final[dict[str, tuple[int, str, str]]] = {}
_REQUEST_LINES: Final[dict[str, tuple[str, str, str]]] = {}


def _start_line(line: str, headers: Headers) -> Request | Response:
    status = _STATUS_LINES.get(line)
    if status is not None:
        return Response(status[0], status[1], headers, version=status[2])
    request = _REQUEST_LINES.get(line)
    if request is not None:
        return Request(request[0], request[1], headers, version=request[2])
    message = _read_start_line(line, headers)
    if isinstance(message, Response):
        remember(_STATUS_LINES, line, (message.status, message.reason, message.version))
    else:
        remember(_REQUEST_LINES, line, (message.method, message.uri, message.version))
    return message


def _read_start_line(line: str, headers: Headers) -> Request | Response:
    if line.startswith("SIP/"):
        # The common form, read without the regex: "SIP/2.0 DDD reason".
        if line.startswith("SIP/2.0 ") and line[11:12] == " " and grammar.is_digits(line[8:11]):
            status = grammar.number(line[8:11])
            if status >= 100:
                return Response(status, line[12:], headers, version="SIP/2.0")
        match = grammar.STATUS_LINE.fullmatch(line)
        if not match:
            raise RemoteProtocolError(f"bad status line {line[:80]!r}")
        status = int(match.group(2))
        if status < 100:
            raise RemoteProtocolError(f"status code out of range: {status}")
        return Response(status, match.group(3), headers, version=match.group(1))
    parts = line.split(" ")
    if len(parts) == 3 and parts[0] in _METHODS and parts[1] and parts[2] and "\t" not in line:
        return Request(parts[0], parts[1], headers, version=parts[2])
    match = grammar.REQUEST_LINE.fullmatch(line)
    if not match:
        raise RemoteProtocolError(f"bad request line {line[:80]!r}")
    remember(_METHODS, match.group(1), True)
    return Request(match.group(1), match.group(2), headers, version=match.group(3))


def parse(
    data: bytes,
    *,
    datagram: bool = True,
    limits: MessageLimits = _UNLIMITED,
    controls: bool = False,
) -> Request | Response:
    """Parse one SIP message.

    Over UDP (``datagram=True``) bytes after the Content-Length-delimited body are ignored
    (RFC 3261 18.3, RFC 4475 dblreq) and a missing Content-Length means "the rest of the
    datagram". Raises ``RemoteProtocolError``; once the start line and headers are known it is a
    ``MessageError`` carrying the partial message, so a request can still get its 400.

    ``limits`` are checked on the bytes before any header is read, and on the list headers
    before any of their values is: a message over one raises ``LimitExceededError``, as does a
    stream message whose Content-Length takes it over the size limit (the framer passes such a
    message on without its body).

    ``controls``: raise ``ControlCharacterError`` (once all the rest is parsed) for a request
    with a control character in its header section other than HTAB and the line ends.
    Responses are not checked: they come from the destinations, and the fields they copy
    from a request were checked in it.
    """
    if data[:1] in _LINE_ENDS:  # a copy only when there is something to strip
        data = data.lstrip(b"\r\n")
    if len(data) > limits.max_message_size:
        raise too_large(len(data), limits)
    head, body_start = _split_head(data, datagram)
    text = head.decode("utf-8", "surrogateescape")
    check_controls = controls and not head.startswith(b"SIP/")  # requests only
    # Counting is C work: the limits are checked before any header is read.
    crlf, line_ends, commas, control_bytes = (
        _measure_text(head, text, check_controls)
        if _MEASURE is None
        else _MEASURE(head, check_controls)
    )
    separator = "\r\n" if crlf else "\n"
    count = line_ends + 1  # the header lines and the start line
    if count > limits.max_headers or len(head) > limits.max_line_length:
        check_head(head, line_ends, limits)
    # The line ends are all the control characters a clean header section holds.
    tainted = check_controls and control_bytes != line_ends * (2 if crlf else 1)
    end = text.find(separator)
    start = text if end < 0 else text[:end]
    headers = _headers(text, len(text) if end < 0 else end + len(separator), separator)
    if count + commas > limits.shortest_list:
        check_lists(headers, limits)
    try:
        message = _start_line(start, headers)
    except RemoteProtocolError as exc:
        if start.startswith("SIP/"):
            raise
        # Keep the headers so that the bad request line can still be answered with a 400.
        raise MessageError(str(exc), Request(start.split(" ", 1)[0], "", headers)) from None
    try:
        length = _content_length(headers)
    except RemoteProtocolError as exc:
        raise MessageError(str(exc), message) from None
    available = len(data) - body_start
    if length is None:
        if not datagram:
            raise MessageError("Content-Length is required on a stream", message)
        length = available
    elif not datagram and body_start + length > limits.max_message_size:
        raise too_large(body_start + length, limits)  # the framer passed it on bodiless
    elif length > available:
        raise MessageError(f"Content-Length {length} exceeds the {available} bytes sent", message)
    message.body = data[body_start : body_start + length]
    if tainted and isinstance(message, Request):
        raise ControlCharacterError(message)
    return message


class StreamFramer:
    """Cuts a stream (TCP) into message byte strings by Content-Length.

    ``feed`` returns complete messages. A message over ``max_size`` bytes whose header section
    is complete comes out as that header section alone, and its body is skipped as it arrives:
    the message is answered (513) and the stream goes on. A message whose Content-Length is
    missing, garbled or repeated with two values comes out as its header section, to be
    answered (400), and the stream goes on right after it: should a body follow, it is read as
    the next message, which costs the sender nothing it could not send anyway. Only a header
    section over ``max_size`` raises ``RemoteProtocolError``: the connection must then be
    closed, since the stream cannot be resynchronised (RFC 3261 18.3).
    """

    __slots__ = ("_buffer", "_skip", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversized message's body still to discard
        self.max_size = max_size

    @property
    def pending(self) -> bool:
        """Whether part of a message has arrived and its end has not."""
        return bool(self._buffer) or self._skip > 0

    def feed(self, data: bytes) -> list[bytes]:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buffer += data
        messages: list[bytes] = []
        while True:
            # Leading CRLFs are keep-alives between messages.
            start = 0
            while self._buffer[start : start + 2] == b"\r\n":
                start += 2
            if start:
                del self._buffer[:start]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_size:
                    raise RemoteProtocolError("header section too large", 513, "Message Too Large")
                return messages
            head = bytes(self._buffer[:end])
            length = self._length(head)
            if length is None:  # answered 400 by parse; the stream goes on after the head
                messages.append(head + b"\r\n\r\n")
                del self._buffer[: end + 4]
                continue
            total = end + 4 + length
            if total > self.max_size:
                messages.append(head + b"\r\n\r\n")  # answered 513 by parse
                held = len(self._buffer)
                del self._buffer[:total]
                self._skip = max(0, total - held)
                if self._skip:
                    return messages
                continue
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]

    @staticmethod
    def _length(head: bytes) -> int | None:
        """The Content-Length of a header section; None when it is missing or unreadable."""
        found: int | None = None
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if not colon or header_key(name.strip().decode("latin-1")) != "content-length":
                continue
            text = value.strip(b" \t")
            if not text.isdigit() or len(text) > 10 or (found is not None and int(text) != found):
                return None
            found = int(text)
        return found
