"""``sipdispatch-ctl set-state`` codes as declarative admin states (pure)."""

from __future__ import annotations

import pytest

from sipdispatch.api.adminstates import held_state, with_state
from sipdispatch.dispatch.health import InvalidStateError

HELD = [
    {"uri": "sip:10.0.0.5:5060", "state": "draining"},
    {"pod": "asterisk-2", "state": "disabled"},
]


@pytest.mark.parametrize(
    ("code", "state"),
    [("dx", "disabled"), ("D", "disabled"), ("dr", "draining"), ("ap", None), ("ip", None)],
)
def test_kamailio_codes_map_onto_held_states(code: str, state: str | None) -> None:
    assert held_state(code) == state


def test_an_unknown_code_names_the_known_ones() -> None:
    with pytest.raises(InvalidStateError, match=r"unknown state 'up'; expected one of a, ap"):
        held_state("up")


def test_a_new_state_replaces_the_entry_however_the_uri_is_spelled() -> None:
    after = with_state(HELD, "dx", "SIP:10.0.0.5", "ticket 7")
    assert after == [
        {"pod": "asterisk-2", "state": "disabled"},
        {"uri": "SIP:10.0.0.5", "state": "disabled", "reason": "ticket 7"},
    ]


def test_ap_and_ip_lift_the_hold_and_keep_the_others() -> None:
    assert with_state(HELD, "ap", "sip:10.0.0.5:5060") == [HELD[1]]
    assert with_state(HELD, "ip", "sip:10.0.0.5") == [HELD[1]]
    assert with_state(HELD, "ap", "sip:10.0.0.9") == HELD  # nothing held there: no change


def test_a_uri_that_is_not_sip_is_refused() -> None:
    with pytest.raises(ValueError, match="not a SIP URI"):
        with_state(HELD, "dx", "tel:+4930")
