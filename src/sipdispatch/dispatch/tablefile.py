"""Kamailio's `dispatcher.list` format, for users migrating from Kamailio.

One destination a line::

    # setid  uri                              flags  priority  attrs
    1        sip:10.0.0.5:5060;transport=tcp  0      10        weight=50;duid=gw1;maxload=20

`flags` (bits: 1 inactive, 2 trying, 4 disabled, 8 probing, 16 no DNS),
`priority` (higher is tried first) and `attrs` (``name=value;...``; known
names: weight, rweight, duid, maxload, socket, ping_from; others are kept)
are optional. ``#`` starts a comment, at the start of a line or of a field.
The file names no algorithm (Kamailio passes it to `ds_select_dst` in the
script): every set gets the `algorithm` given to the loader.

Errors name the file, line and field: ``dispatcher.list:3: uri: 'foo' is not
a SIP URI (expected sip:host[:port])``.
"""

from __future__ import annotations

from pathlib import Path

from sipdispatch.dispatch import algorithms as _algorithms
from sipdispatch.dispatch import tableconfig as _tableconfig
from sipdispatch.sip import grammar

__all__ = ["TableFileError", "load_table_file", "parse_attrs", "parse_table"]

_FIELDS = ("setid", "uri", "flags", "priority", "attrs")


class TableFileError(ValueError):
    """A bad line: ``file:line: field: reason``."""

    def __init__(self, source: str, line: int | None, field: str | None, reason: str) -> None:
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")
        self.source = source
        self.line = line
        self.field = field
        self.reason = reason


def parse_attrs(text: str) -> dict[str, str]:
    """Parse ``name=value;name=value`` (a trailing ``;`` is allowed).

    Kamailio reads attrs as SIP parameters, so a name is a SIP token.
    """
    attrs: dict[str, str] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not grammar.PARAM_NAME.fullmatch(name):
            raise ValueError(f"{item!r} is not name=value")
        if name in attrs:
            raise ValueError(f"{name!r} is given twice")
        attrs[name] = value.strip()
    return attrs


def _int(text: str, *, signed: bool) -> int:
    digits = text[1:] if signed and text.startswith("-") else text
    if digits.isascii() and digits.isdigit():
        return int(text)
    kind = "an integer" if signed else "a non-negative integer"
    raise ValueError(f"{text!r} is not {kind}")


def parse_table(
    text: str,
    *,
    source: str = "dispatcher.list",
    algorithm: str | int = _tableconfig.DEFAULT_ALGORITHM,
    hash_key: str | None = None,
) -> _tableconfig.TableConfig:
    """Parse the contents of a `dispatcher.list`; every set gets `algorithm`."""
    # A bad algorithm is the caller's argument, not the file's: plain ValueError.
    algorithm = _algorithms.make_selector(algorithm, hash_key=hash_key).name
    by_set: dict[int, list[_tableconfig.Destination]] = {}
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        for i, token in enumerate(tokens):
            if token.startswith("#"):
                del tokens[i:]
                break
        if not tokens:
            continue

        def fail(field: str, reason: str, line: int = number) -> TableFileError:
            return TableFileError(source, line, field, reason)

        if len(tokens) < 2:
            raise fail("uri", "missing (line format: setid uri [flags [priority [attrs]]])")
        if len(tokens) > len(_FIELDS):
            extra = " ".join(tokens[len(_FIELDS) :])
            raise fail("attrs", f"unexpected text after the attrs: {extra!r} (no spaces in attrs)")
        values: dict[str, int] = {}
        numeric = {"setid": tokens[0]} | dict(zip(("flags", "priority"), tokens[2:4], strict=False))
        for field, token in numeric.items():
            try:
                values[field] = _int(token, signed=field == "priority")
            except ValueError as exc:
                raise fail(field, str(exc)) from None
        try:
            attrs = parse_attrs(tokens[4]) if len(tokens) > 4 else {}
        except ValueError as exc:
            raise fail("attrs", str(exc)) from None
        try:
            dest = _tableconfig.Destination.create(
                values["setid"],
                tokens[1],
                values.get("flags", 0),
                values.get("priority", 0),
                attrs,
            )
        except _tableconfig.DestinationError as exc:
            raise fail(exc.field, exc.reason) from None
        if dest.key in first_line:
            raise fail(
                "uri", f"{tokens[1]} is already in set {dest.set_id} (line {first_line[dest.key]})"
            )
        first_line[dest.key] = number
        by_set.setdefault(dest.set_id, []).append(dest)
    sets = tuple(
        _tableconfig.SetConfig(set_id, tuple(dests), algorithm, hash_key)
        for set_id, dests in by_set.items()
    )
    return _tableconfig.TableConfig(sets)


def load_table_file(
    path: str | Path,
    *,
    algorithm: str | int = _tableconfig.DEFAULT_ALGORITHM,
    hash_key: str | None = None,
) -> _tableconfig.TableConfig:
    """Read and parse a `dispatcher.list` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TableFileError(str(path), None, None, f"cannot read: {exc}") from None
    return parse_table(text, source=str(path), algorithm=algorithm, hash_key=hash_key)
