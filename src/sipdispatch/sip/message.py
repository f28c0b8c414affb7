"""SIP requests and responses, and their header multimap.

A proxy rewrites a handful of headers (Via, Route, Record-Route, Max-Forwards) and forwards the
rest untouched, so headers stay as ``(key, name, value)`` text: ``key`` is the canonical
lowercase long name used for look-ups (compact forms expanded), ``name`` is kept as the sender
wrote it. Values are parsed only when asked for (``values.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from sipdispatch.sip import grammar
from sipdispatch.sip.values import split_first, split_values

__all__ = ["Header", "Headers", "Message", "Request", "Response", "header_key"]

#: (key, name as written, value). Typed as a tuple of any length, not of three, because mypyc
#: unboxes a fixed-length tuple into a C struct and makes a new tuple object each time one is
#: stored: the parser stores each header line's, memoised, in the message's list.
Header = tuple[str, ...]

_KEY_CACHE: Final[dict[str, str]] = {}

_Write = Callable[[str, list[Header], list[str | None], str, bytes], bytes | None]


def _load_write() -> _Write | None:
    """The C writer of a message's bytes (``sip/_lines.c``), built with the compiled hot path;
    the pure Python build writes them with ``Headers._encoded``."""
    try:
        from sipdispatch.sip import _lines  # noqa: PLC0415 - optional, native builds only
    except ImportError:
        return None
    return _lines.write


_WRITE: Final = _load_write()


def header_key(name: str) -> str:
    """Canonical look-up key of a header name: lowercase, compact forms expanded."""
    key = _KEY_CACHE.get(name)
    if key is None:
        lowered = name.lower()
        key = grammar.COMPACT_FORMS.get(lowered, lowered)
        if len(_KEY_CACHE) < 4096:  # bounded: header names come from the network
            _KEY_CACHE[name] = key
    return key


class Headers:
    """An ordered multimap of header fields; order matters for Via, Route and Record-Route."""

    __slots__ = ("_first", "_items", "_lines", "_repeated")

    def __init__(
        self,
        items: list[Header] | None = None,
        first: dict[str, str] | None = None,
        repeated: set[str] | None = None,
        lines: list[str | None] | None = None,
    ) -> None:
        """``first`` and ``repeated``, when given, must be the index of ``items`` (the parser
        builds it as it reads them); ``lines``, the line each item was read from (None for
        one to write anew), aligned with ``items``."""
        self._items: list[Header] = items if items is not None else []
        # Forwarding writes an unchanged field as the line it came in, not rebuilt from its
        # name and value: a proxy changes three or four fields of a dozen.
        self._lines: list[str | None] = lines if lines is not None else [None] * len(self._items)
        # key -> first value, and the keys seen more than once, built together on the first
        # look-up: a proxy reads the same dozen headers many times per message and asks which
        # are repeated on every message. A change to one key's fields updates that key's
        # entries (the proxy pops and pushes Via and Route on every message it forwards).
        self._first: dict[str, str] | None = first
        self._repeated: set[str] = repeated if repeated is not None else set()

    def __iter__(self) -> Iterator[Header]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        # The index goes with the copy (two C copies) rather than being rebuilt field by field
        # on the copy's first look-up: a proxy copies every request it forwards, then edits it.
        first = self._first
        if first is None:
            return Headers(list(self._items), lines=list(self._lines))
        return Headers(list(self._items), first.copy(), set(self._repeated), list(self._lines))

    def write(self, parts: list[str], content_length: str) -> None:
        """Append the header lines to ``parts``, with one Content-Length: ``content_length``."""
        has_length = False
        lines = self._lines
        for i, (key, name, value) in enumerate(self._items):
            if key == "content-length":
                if not has_length:
                    has_length = True
                    parts.append(f"{name}: {content_length}")
                continue
            line = lines[i]
            parts.append(f"{name}: {value}" if line is None else line)
        if not has_length:
            parts.append(f"Content-Length: {content_length}")

    def encode(self, start_line: str, body: bytes) -> bytes:
        """A message of these fields: ``start_line``, the fields, one Content-Length of
        ``body``'s length (where the first was, else at the end), the blank line, ``body``."""
        length = str(len(body))
        if _WRITE is not None:
            data = _WRITE(start_line, self._items, self._lines, length, body)
            if data is not None:  # None: text that is not ASCII, which the code below takes
                return data
        return self._encoded(start_line, length, body)

    def _encoded(self, start_line: str, length: str, body: bytes) -> bytes:
        """``encode``'s reference, and what runs where ``sip/_lines.c`` is not built."""
        parts = [start_line]
        self.write(parts, length)
        parts.append("\r\n")
        return "\r\n".join(parts).encode("utf-8", "surrogateescape") + body

    def _index(self) -> dict[str, str]:
        first: dict[str, str] = {}
        repeated: set[str] = set()
        for k, _, value in self._items:
            if k in first:
                repeated.add(k)
            else:
                first[k] = value
        self._first = first
        self._repeated = repeated
        return first

    def _reindex(self, key: str, start: int = 0) -> None:
        """Bring the index up to date for ``key`` after its fields changed; no field with
        this key comes before ``start``. The scan stops at the key's second field: an edit
        touches the top Via or Route, and the whole list need not be read for it."""
        first = self._first
        if first is None:
            return  # built on the next look-up
        value: str | None = None
        items = self._items
        for i in range(start, len(items)):
            item = items[i]
            if item[0] == key:
                if value is not None:
                    first[key] = value
                    self._repeated.add(key)
                    return
                value = item[2]
        if value is None:
            first.pop(key, None)
        else:
            first[key] = value
        self._repeated.discard(key)

    def get(self, key: str) -> str | None:
        """Value of the first field with this key (``key`` must be canonical)."""
        first = self._first
        if first is None:
            first = self._index()
        return first.get(key)

    def missing(self, keys: tuple[str, ...]) -> str | None:
        """The first of ``keys`` (canonical) that no field has, or None."""
        first = self._first
        if first is None:
            first = self._index()
        for key in keys:
            if key not in first:
                return key
        return None

    def repeated_of(self, keys: tuple[str, ...]) -> str | None:
        """The first of ``keys`` (canonical) that more than one field has, or None."""
        if self._first is None:
            self._index()
        repeated = self._repeated
        if repeated:
            for key in keys:
                if key in repeated:
                    return key
        return None

    def has_repeated(self) -> bool:
        """Whether any header name appears more than once."""
        if self._first is None:
            self._index()
        return bool(self._repeated)

    def repeated(self, key: str) -> bool:
        """Whether the header with this (canonical) key appears more than once."""
        if self._first is None:
            self._index()
        return key in self._repeated

    def get_all(self, key: str) -> list[str]:
        """Every field value with this key, in order (not split on commas)."""
        return [value for k, _, value in self._items if k == key]

    def values(self, key: str) -> list[str]:
        """Every value with this key, comma-separated lists split (Via, Route, Contact...)."""
        out: list[str] = []
        for k, _, value in self._items:
            if k == key:
                out.extend(split_values(value))
        return out

    def first_value(self, key: str) -> str | None:
        """The first element of a list header, without splitting the rest of the list."""
        for k, _, value in self._items:
            if k == key:
                return split_first(value)[0]
        return None

    def append(self, name: str, value: str) -> None:
        key = header_key(name)
        self._items.append((key, name, value))
        self._lines.append(None)
        self._reindex(key)

    def set(self, name: str, value: str) -> None:
        """Replace the first field with this name's key (keeping its position), or append."""
        key = header_key(name)
        for i, (k, written, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (k, written, value)
                self._lines[i] = None
                self._reindex(key, i)
                return
        self._items.append((key, name, value))
        self._lines.append(None)
        self._reindex(key)

    def remove_all(self, key: str) -> None:
        kept = [i for i, h in enumerate(self._items) if h[0] != key]
        self._items = [self._items[i] for i in kept]
        self._lines = [self._lines[i] for i in kept]
        self._reindex(key)

    def push_first(self, name: str, value: str) -> None:
        """Add a value on top of a list header (a new Via or Record-Route goes first)."""
        key = header_key(name)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items.insert(i, (key, name, value))
                self._lines.insert(i, None)
                self._reindex(key, i)
                return
        # No such header yet: Via belongs at the top, other list headers just before the body.
        if key == "via":
            self._items.insert(0, (key, name, value))
            self._lines.insert(0, None)
        else:
            self._items.append((key, name, value))
            self._lines.append(None)
        self._reindex(key)

    def replace_first(self, key: str, value: str) -> None:
        """Replace the first element of a list header (the top Via), keeping the others."""
        for i, (k, written, old) in enumerate(self._items):
            if k == key:
                rest = split_first(old)[1]
                self._items[i] = (k, written, value if rest is None else f"{value}, {rest}")
                self._lines[i] = None
                self._reindex(key, i)
                return
        raise KeyError(key)

    def pop_first(self, key: str) -> str | None:
        """Remove and return the first element of a list header (the top Via, the top Route)."""
        for i, (k, written, value) in enumerate(self._items):
            if k == key:
                first, rest = split_first(value)
                if rest is None:
                    del self._items[i]
                    del self._lines[i]
                else:
                    self._items[i] = (k, written, rest)
                    self._lines[i] = None
                self._reindex(key, i)
                return first
        return None


class Message:
    """What requests and responses share."""

    __slots__ = ("body", "headers", "version")

    def __init__(self, headers: Headers, body: bytes = b"", version: str = "SIP/2.0") -> None:
        self.headers = headers
        self.body = body
        self.version = version

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id") or ""

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length is always written and always equals the body's length."""
        return self.headers.encode(self.start_line(), self.body)


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"
