"""Every RFC 4475 / RFC 5118 torture message is parsed or rejected as its RFC expects."""

from __future__ import annotations

import pytest

from corpus import MESSAGES, TortureMessage
from sipdispatch.sip import codec, validation
from sipdispatch.sip.errors import RemoteProtocolError
from sipdispatch.sip.message import Request

# Decided by the proxy's routing logic, not by the parser: see tests/proxy/test_core_conformance.
_ROUTING_CODES = {420, 483}


def _check(data: bytes) -> None:
    message = codec.parse(data)
    if isinstance(message, Request):
        validation.validate_request(message)
    else:
        validation.validate_response(message)


@pytest.mark.parametrize("case", MESSAGES, ids=str)
def test_torture_message(case: TortureMessage) -> None:
    rejected = case.outcome == "reject" and not set(case.response_codes) & _ROUTING_CODES
    if rejected or (case.outcome == "drop" and not case.well_formed):
        with pytest.raises(RemoteProtocolError) as info:
            _check(case.data)
        if case.kind == "request":
            assert info.value.status in case.response_codes
    else:
        _check(case.data)


def test_corpus_is_complete() -> None:
    assert len([m for m in MESSAGES if m.rfc == 4475]) == 49
    assert len([m for m in MESSAGES if m.rfc == 5118]) == 12
