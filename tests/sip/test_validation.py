"""What a proxy checks before it acts on a message, and the status each failure answers."""

from __future__ import annotations

import pytest

from sipdispatch.sip import codec, validation
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request, Response

INVITE = {
    "start": "INVITE sip:bob@biloxi.com SIP/2.0",
    "Via": "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
    "Max-Forwards": "70",
    "To": "Bob <sip:bob@biloxi.com>",
    "From": "Alice <sip:alice@atlanta.com>;tag=1928301774",
    "Call-ID": "a84b4c76e66710@pc33.atlanta.com",
    "CSeq": "314159 INVITE",
    "Contact": "<sip:alice@pc33.atlanta.com>",
}


def message(fields: dict[str, str], **changes: str | None) -> Request | Response:
    """Bytes through the codec, as they arrive: `changes` replace (None: drop) a field."""
    merged: dict[str, str | None] = {
        **fields,
        **{k.replace("_", "-"): v for k, v in changes.items()},
    }
    lines = [merged.pop("start") or ""]
    lines += [f"{name}: {value}" for name, value in merged.items() if value is not None]
    return codec.parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())


def request(**changes: str | None) -> Request:
    parsed = message(INVITE, **changes)
    assert isinstance(parsed, Request)
    return parsed


def rejected(**changes: str | None) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        validation.validate_request(request(**changes))
    return info.value


def test_a_well_formed_request_passes_and_yields_its_top_via() -> None:
    top = validation.validate_request(request())
    assert (top.host, top.branch) == ("pc33.atlanta.com", "z9hG4bK776asdhds")


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_a_missing_mandatory_header_is_a_400_naming_it(missing: str) -> None:
    error = rejected(**{missing: None})
    assert (error.status, str(error)) == (400, f"missing {missing.lower()} header")


@pytest.mark.parametrize(
    ("changes", "status", "why"),
    [
        ({"start": "INVITE sip:bob@biloxi.com SIP/7.0"}, 505, "unsupported version"),
        ({"start": "INVITE tel:+1-201-555-0123 SIP/2.0"}, None, ""),  # routable
        ({"start": "INVITE http://biloxi.com SIP/2.0"}, 416, "scheme"),
        ({"start": "INVITE sip:bob@biloxi.com?subject=x SIP/2.0"}, 400, "headers"),
        ({"Via": "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK"}, 400, "magic cookie"),
        ({"CSeq": "314159 REGISTER"}, 400, "CSeq method"),
        ({"CSeq": "4294967296 INVITE"}, 400, "CSeq"),
        ({"Max-Forwards": "256"}, 400, "Max-Forwards"),
        ({"Expires": "4294967296"}, 400, "Expires"),
        ({"Contact": "<sip:alice@pc33.atlanta.com>;expires=-1"}, 400, "Contact expires"),
        ({"Contact": "*"}, None, ""),
        ({"To": "Bob <sip:bob@biloxi.com"}, 400, "unclosed"),
        ({"Record-Route": "<sip:p1.example.com;lr>, <sip:p2 .example.com;lr>"}, 400, ""),
    ],
)
def test_each_check_answers_the_status_the_rfcs_name(
    changes: dict[str, str], status: int | None, why: str
) -> None:
    if status is None:
        validation.validate_request(request(**changes))
        return
    error = rejected(**changes)
    assert error.status == status
    assert why in str(error)


def test_a_singleton_header_given_twice_is_a_400() -> None:
    data = (
        b"BYE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCall-ID: y\r\n"
        b"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    parsed = codec.parse(data)
    assert isinstance(parsed, Request)
    with pytest.raises(RemoteProtocolError, match="call-id appears 2 times"):
        validation.validate_request(parsed)


def test_inside_a_dialog_only_what_routing_needs_is_checked() -> None:
    # A broken Contact does not stop a BYE (To has a tag); it stops a new INVITE.
    broken = "<sip:alice@pc33.atlanta.com"
    in_dialog = request(To="Bob <sip:bob@biloxi.com>;tag=a6c85cf", Contact=broken)
    assert validation.has_to_tag(in_dialog)
    validation.validate_request(in_dialog)
    assert not validation.has_to_tag(request())
    assert rejected(Contact=broken).status == 400


@pytest.mark.parametrize(
    ("to", "tagged"),
    [
        ("<sip:bob@biloxi.com>;tag=1", True),
        ("<sip:bob@biloxi.com> ; TAG = 1", True),
        ("<sip:bob@biloxi.com>;tagx=1", False),
        ("<sip:bob@biloxi.com>", False),
    ],
)
def test_has_to_tag(to: str, tagged: bool) -> None:
    assert validation.has_to_tag(request(To=to)) is tagged


RESPONSE = {
    "start": "SIP/2.0 200 OK",
    "Via": "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2, SIP/2.0/UDP pc33.atlanta.com",
    "To": "Bob <sip:bob@biloxi.com>;tag=a6c85cf",
    "From": "Alice <sip:alice@atlanta.com>;tag=1928301774",
    "Call-ID": "a84b4c76e66710@pc33.atlanta.com",
    "CSeq": "314159 INVITE",
}


def test_a_response_needs_its_mandatory_headers_and_a_readable_top_via() -> None:
    ok = message(RESPONSE)
    assert isinstance(ok, Response)
    assert validation.validate_response(ok).host == "proxy.example.com"
    for changes in ({"CSeq": None}, {"Via": "SIP/2.0/UDP"}, {"CSeq": "x INVITE"}):
        broken = message(RESPONSE, **changes)
        assert isinstance(broken, Response)
        with pytest.raises(RemoteProtocolError):
            validation.validate_response(broken)
