"""The grammar's patterns that are used by searching or rewriting rather than by a parser."""

from __future__ import annotations

import pytest

from sipdispatch.sip import grammar


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("atlanta.com", True),
        ("gw-1.voice.svc.cluster.local.", True),  # a fully qualified name
        ("192.0.2.1", True),
        ("a", True),
        ("a..b", False),
        ("-a.com", False),
        ("a-.com", False),
        ("a_b.com", False),
        (".com", False),
        ("", False),
    ],
)
def test_hostname(host: str, ok: bool) -> None:
    assert (grammar.HOSTNAME.fullmatch(host) is not None) is ok


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("Alice <sip:alice@atlanta.com>;tag=1928301774", "1928301774"),
        ("<sip:a@b> ; TAG = x-1 ;other=2", "x-1"),
        ("<sip:a@b>;tag=", ""),
        ("<sip:a@b>;tagged=1", None),
        ("<sip:a@b>", None),
    ],
)
def test_tag_param_finds_a_tag_without_a_full_parse(value: str, tag: str | None) -> None:
    match = grammar.TAG_PARAM.search(value)
    assert (match.group(1) if match else None) == tag


@pytest.mark.parametrize(
    ("value", "groups"),
    [
        ('Digest username="bob", realm="biloxi.com"', ("bob", None)),
        ('Digest realm="x",USERNAME = "a \\" b",nonce="1"', ('a \\" b', None)),
        ("Digest username=bob,realm=x", (None, "bob")),
    ],
)
def test_digest_username(value: str, groups: tuple[str | None, str | None]) -> None:
    match = grammar.DIGEST_USERNAME.search(value)
    assert match is not None
    assert match.groups() == groups


def test_a_number_reads_as_int_reads_it_the_first_time_and_after() -> None:
    for _ in range(2):  # the second round from memory
        assert grammar.number("070") == 70
        assert grammar.number("0") == 0
        assert grammar.number("4294967295") == 2**32 - 1
        with pytest.raises(ValueError, match="invalid literal"):
            grammar.number("7x")
