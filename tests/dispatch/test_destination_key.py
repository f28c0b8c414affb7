"""`DestinationKey`: one identity per destination, however its URI is spelled."""

from __future__ import annotations

import pytest

from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.dispatch.tableconfig import Destination


def test_spellings_of_one_destination_have_one_key() -> None:
    keys = {
        DestinationKey.parse(1, "sip:10.0.0.1"),
        DestinationKey.parse(1, "sip:10.0.0.1:5060"),
        DestinationKey.parse(1, "sip:10.0.0.1;transport=udp"),
        DestinationKey.of(Destination.create(1, "sip:10.0.0.1:5060;transport=UDP")),
    }
    assert len(keys) == 1
    assert DestinationKey.parse(2, "sip:10.0.0.1") not in keys  # another set, another one


def test_its_text_is_the_destinations_key() -> None:
    dest = Destination.create(3, "sip:gw.example.com;transport=tcp")
    assert str(DestinationKey.of(dest)) == dest.key


def test_keys_sort_by_set_then_uri() -> None:
    keys = [DestinationKey(2, "sip:a"), DestinationKey(1, "sip:b"), DestinationKey(1, "sip:a")]
    assert sorted(keys) == [keys[2], keys[1], keys[0]]


def test_a_uri_that_is_not_one_has_no_key() -> None:
    with pytest.raises(ValueError, match="not a SIP URI"):
        DestinationKey.parse(1, "not a uri")
