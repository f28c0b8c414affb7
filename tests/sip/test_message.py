"""Requests, responses and the header multimap a proxy edits."""

from __future__ import annotations

import pytest

from sipdispatch.sip import codec
from sipdispatch.sip.message import Headers, Request, Response, header_key


def headers(*fields: tuple[str, str]) -> Headers:
    h = Headers()
    for name, value in fields:
        h.append(name, value)
    return h


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Via", "via"),
        ("v", "via"),
        ("CALL-ID", "call-id"),
        ("i", "call-id"),
        ("X-Queue", "x-queue"),
    ],
)
def test_header_keys_fold_case_and_expand_compact_forms(name: str, key: str) -> None:
    assert header_key(name) == key


def test_look_ups_use_the_key_and_keep_the_name_as_written() -> None:
    h = headers(("v", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("VIA", "SIP/2.0/TCP c"), ("f", "<sip:x@y>"))
    assert h.get("via") == "SIP/2.0/UDP a, SIP/2.0/UDP b"
    assert h.get_all("via") == ["SIP/2.0/UDP a, SIP/2.0/UDP b", "SIP/2.0/TCP c"]
    assert h.values("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/TCP c"]
    assert h.first_value("via") == "SIP/2.0/UDP a"
    assert h.get("from") == "<sip:x@y>"
    assert h.get("to") is None
    assert h.first_value("to") is None
    assert [name for _, name, _ in h] == ["v", "VIA", "f"]
    assert h.has_repeated()
    assert not headers(("To", "a"), ("From", "b")).has_repeated()
    assert h.missing(("via", "from")) is None
    assert h.missing(("via", "to", "cseq")) == "to"
    assert h.repeated_of(("from", "via")) == "via"
    assert h.repeated_of(("from", "to")) is None


def test_a_proxy_pushes_and_pops_the_top_of_list_headers() -> None:
    h = headers(("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("Route", "<sip:p1;lr>"))
    h.push_first("Via", "SIP/2.0/UDP proxy;branch=z9hG4bK1")
    assert h.values("via")[0] == "SIP/2.0/UDP proxy;branch=z9hG4bK1"
    assert h.pop_first("via") == "SIP/2.0/UDP proxy;branch=z9hG4bK1"
    assert h.pop_first("via") == "SIP/2.0/UDP a"
    assert h.get("via") == "SIP/2.0/UDP b"  # the rest of the field stays
    h.replace_first("via", "SIP/2.0/UDP b;received=10.0.0.1")
    assert h.values("via") == ["SIP/2.0/UDP b;received=10.0.0.1"]
    assert h.pop_first("route") == "<sip:p1;lr>"
    assert h.get("route") is None  # the last value took its field with it
    assert h.pop_first("route") is None
    with pytest.raises(KeyError):
        h.replace_first("route", "<sip:p2;lr>")


def test_a_new_via_goes_on_top_and_other_new_lists_at_the_end() -> None:
    h = headers(("To", "<sip:a@b>"))
    h.push_first("Record-Route", "<sip:proxy;lr>")
    h.push_first("Via", "SIP/2.0/UDP proxy")
    assert [key for key, _, _ in h] == ["via", "to", "record-route"]


def test_set_and_remove_all_change_what_look_ups_see() -> None:
    h = headers(("Max-Forwards", "70"), ("Contact", "<sip:a@b>"), ("Contact", "<sip:c@d>"))
    assert h.get("max-forwards") == "70"  # fills the look-up cache
    h.set("Max-Forwards", "69")
    assert h.get("max-forwards") == "69"
    h.set("Subject", "hi")
    assert h.get("subject") == "hi"
    h.remove_all("contact")
    assert h.get("contact") is None
    assert len(h) == 2
    copy = h.copy()
    copy.set("Subject", "changed")
    assert h.get("subject") == "hi"


def test_serialization_writes_one_true_content_length() -> None:
    request = Request(
        "MESSAGE",
        "sip:bob@biloxi.com",
        headers(("Via", "SIP/2.0/UDP a"), ("l", "99"), ("Content-Length", "3")),
        b"hello",
    )
    assert request.to_bytes() == (
        b"MESSAGE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nl: 5\r\n\r\nhello"
    )
    response = Response(200, "OK", headers(("Call-ID", "abc")))
    assert response.to_bytes() == b"SIP/2.0 200 OK\r\nCall-ID: abc\r\nContent-Length: 0\r\n\r\n"
    assert response.call_id == "abc"


def test_a_copy_can_be_edited_without_touching_the_original() -> None:
    request = Request("INVITE", "sip:bob@biloxi.com", headers(("Max-Forwards", "70")))
    copy = request.copy()
    copy.headers.set("Max-Forwards", "69")
    copy.uri = "sip:bob@10.0.0.1"
    assert request.headers.get("max-forwards") == "70"
    assert request.start_line() == "INVITE sip:bob@biloxi.com SIP/2.0"
    assert repr(copy) == "<Request INVITE sip:bob@10.0.0.1>"


def test_a_copy_of_indexed_headers_keeps_its_own_index() -> None:
    """A copy made after look-ups carries the index along: its edits show in its look-ups,
    and in neither of the original's."""
    original = headers(("Via", "SIP/2.0/UDP a"), ("Max-Forwards", "70"), ("Route", "<sip:p;lr>"))
    assert original.get("max-forwards") == "70"  # the index is built
    copy = original.copy()
    copy.set("Max-Forwards", "69")
    copy.push_first("Route", "<sip:q;lr>")
    copy.pop_first("via")
    assert (copy.get("max-forwards"), copy.get("route"), copy.get("via")) == (
        "69",
        "<sip:q;lr>",
        None,
    )
    assert copy.repeated("route")
    assert not original.repeated("route")
    assert original.get("max-forwards") == "70"
    assert original.get("via") == "SIP/2.0/UDP a"
    original.push_first("Via", "SIP/2.0/UDP b")
    assert not copy.repeated("via")
    assert copy.get("via") is None


def test_look_ups_after_each_edit_match_a_fresh_index() -> None:
    """The look-up index is kept up to date key by key as fields are pushed, popped, set and
    removed: after every edit it answers as one built from scratch would."""
    h = headers(
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
        ("Route", "<sip:p1;lr>"),
        ("Route", "<sip:p2;lr>"),
        ("Contact", "<sip:c@d>"),
    )
    edits = [
        lambda: h.push_first("Via", "SIP/2.0/UDP proxy;branch=z9hG4bK3"),
        lambda: h.pop_first("route"),
        lambda: h.pop_first("via"),
        lambda: h.pop_first("via"),
        lambda: h.append("Contact", "<sip:e@f>"),
        lambda: h.set("Max-Forwards", "69"),
        lambda: h.replace_first("via", "SIP/2.0/UDP b;received=10.0.0.1"),
        lambda: h.pop_first("route"),
        lambda: h.remove_all("contact"),
        lambda: h.push_first("Record-Route", "<sip:proxy;lr>"),
    ]
    for edit in edits:
        assert h.get("via") is not None  # keeps the index built between edits
        edit()
        fresh = h.copy()
        for key in ("via", "route", "contact", "max-forwards", "record-route"):
            assert h.get(key) == fresh.get(key), key
            assert h.repeated(key) == fresh.repeated(key), key
        assert h.has_repeated() == fresh.has_repeated()


def test_a_forwarded_message_keeps_the_lines_it_did_not_change() -> None:
    """Fields the proxy does not touch leave as they came (spacing and all); the ones it
    edits, and folded ones, are written anew, and Content-Length always tells the truth."""
    data = (
        b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"Route: <sip:p1;lr>, <sip:p2;lr>\r\n"
        b"Subject:   odd  spacing\r\n"
        b"X-Folded: one\r\n two\r\n"
        b"Max-Forwards : 70\r\n"
        b"Content-Length: 9\r\n\r\nv=0\r\nbody"
    )
    request = codec.parse(data)
    assert isinstance(request, Request)
    request.headers.push_first("Via", "SIP/2.0/UDP proxy;branch=z9hG4bK2")
    request.headers.pop_first("route")
    request.headers.set("Max-Forwards", "69")
    assert request.to_bytes() == (
        b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP proxy;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"Route: <sip:p2;lr>\r\n"
        b"Subject:   odd  spacing\r\n"
        b"X-Folded: one two\r\n"
        b"Max-Forwards: 69\r\n"
        b"Content-Length: 9\r\n\r\nv=0\r\nbody"
    )
    copy = request.copy()
    copy.headers.remove_all("subject")
    assert b"Subject:   odd  spacing\r\n" in request.to_bytes()
    assert b"Subject" not in copy.to_bytes()
    assert b"Max-Forwards: 69\r\n" in copy.to_bytes()
