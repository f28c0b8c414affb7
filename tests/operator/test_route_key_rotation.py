"""The route keys' life in the operator's Secret, step by step, with the clock passed in."""

from __future__ import annotations

import itertools

import pytest

from sipdispatch.api.routekeys import fingerprint
from sipdispatch.operator.__main__ import build_parser
from sipdispatch.operator.routekeys import Plan, Policy, plan, read_state, write_state

HOUR = 3600.0
POLICY = Policy(rotate_every=720 * HOUR, settle=300.0, dialog_lifetime=12 * HOUR, max_keys=4)
T0 = 1_800_000_000.0


def step(
    keys: tuple[str, ...], last: Plan | None, now: float, request: str = "", **policy: float
) -> Plan:
    """One pass, from the state the last one wrote; new keys are numbered, unique per test."""
    state = read_state(write_state(last)) if last else {}
    made = len(last.keys) + len(keys) if last else len(keys)
    numbers = itertools.count(int(now) * 10 + made)
    chosen = Policy(**{**POLICY.__dict__, **policy})
    return plan(keys, state, request, now, policy=chosen, make_key=lambda: f"{next(numbers):064d}")


def test_a_missing_list_gets_one_fresh_signing_key() -> None:
    made = step((), None, T0)
    assert len(made.keys) == 1
    assert made.records[0].signing_since == T0
    assert made.changes == (f"made key {fingerprint(made.keys[0].encode())}, signing",)


def test_nothing_changes_before_the_period() -> None:
    made = step((), None, T0)
    later = step(made.keys, made, T0 + 719 * HOUR)
    assert later.keys == made.keys
    assert later.changes == ()
    assert write_state(later) == write_state(made)


def test_a_due_rotation_adds_second_then_signs_after_settling_then_removes_after_the_lifetime() -> (
    None
):
    made = step((), None, T0)
    old = made.keys[0]
    added = step(made.keys, made, T0 + 720 * HOUR)
    assert added.keys[0] == old, "the old key still signs until every replica has the new one"
    assert len(added.keys) == 2
    new = added.keys[1]
    assert step(added.keys, added, T0 + 720 * HOUR + 299).keys == (old, new)
    signing = step(added.keys, added, T0 + 720 * HOUR + 300)
    assert signing.keys == (new, old)
    assert signing.records[1].retired == T0 + 720 * HOUR + 300
    just_before = step(signing.keys, signing, T0 + 732 * HOUR + 299)
    assert just_before.keys == (new, old), "routes signed with the old key may still be live"
    removed = step(just_before.keys, just_before, T0 + 732 * HOUR + 300)
    assert removed.keys == (new,)


def test_a_rotation_asked_by_annotation_is_taken_once() -> None:
    made = step((), None, T0)
    asked = step(made.keys, made, T0 + 60, request="2026-12-05T22:00:00Z", settle=0)
    assert asked.keys[1] == made.keys[0], "settle 0: the new key signs at once"
    assert len(asked.keys) == 2
    assert asked.handled_request == "2026-12-05T22:00:00Z"
    again = step(asked.keys, asked, T0 + 120, request="2026-12-05T22:00:00Z", settle=0)
    assert again.keys == asked.keys
    other = step(again.keys, again, T0 + 180, request="second", settle=0)
    assert len(other.keys) == 3


def test_zero_period_never_rotates_by_itself() -> None:
    made = step((), None, T0, rotate_every=0)
    assert step(made.keys, made, T0 + 10_000 * HOUR, rotate_every=0).keys == made.keys


def test_keys_found_without_a_record_are_kept_first_signs_others_retire() -> None:
    found = ("a" * 64, "b" * 64)
    adopted = step(found, None, T0)
    assert adopted.keys == found
    assert adopted.records[0].signing_since == T0
    assert adopted.records[1].retired == T0
    assert step(adopted.keys, adopted, T0 + 12 * HOUR).keys == ("a" * 64,)


def test_at_most_max_keys_the_oldest_retired_go_first() -> None:
    found = tuple(letter * 64 for letter in "abcde")
    capped = step(found, None, T0, max_keys=3)
    assert capped.keys[0] == "a" * 64
    assert len(capped.keys) == 3


def test_the_state_names_keys_by_fingerprint_never_the_keys() -> None:
    made = step((), None, T0)
    text = write_state(made)
    assert made.keys[0] not in text
    assert fingerprint(made.keys[0].encode()) in text
    assert '"created":"2027-01-15T08:00:00Z"' in text


@pytest.mark.parametrize(
    ("value", "seconds"), [("720h", 2_592_000.0), ("1h30m", 5400.0), ("90s", 90.0), ("0", 0.0)]
)
def test_durations_read_as_the_values_write_them(value: str, seconds: float) -> None:
    args = build_parser().parse_args([f"--rotate-route-keys-every={value}"])
    assert args.rotate_route_keys_every == seconds


@pytest.mark.parametrize("value", ["1d", "-5", "h", ""])
def test_a_bad_duration_is_refused_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([f"--route-keys-settle={value}"])
    assert "--route-keys-settle" in capsys.readouterr().err


def test_a_request_during_a_rotation_is_taken_after_it() -> None:
    made = step((), None, T0)
    added = step(made.keys, made, T0 + 10, request="one")
    assert len(added.keys) == 2
    during = step(added.keys, added, T0 + 20, request="two")
    assert during.keys == added.keys, "one new key at a time"
    assert during.handled_request == "one"
    signing = step(during.keys, during, T0 + 400, request="two")
    assert signing.keys == (added.keys[1], made.keys[0])
    again = step(signing.keys, signing, T0 + 410, request="two")
    assert len(again.keys) == 3, "the second request adds its key once the first one signs"
    assert again.keys[0] == added.keys[1]
    assert again.handled_request == "two"
