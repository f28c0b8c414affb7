"""Destination health: thresholds, overrides, probing flag, codes, events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipdispatch.dispatch import health
from sipdispatch.dispatch.health import HealthRecord, HealthState, Outcome, Result

OK = Result.success(0.01)
FAIL = Result.failure("500 Server Error")
TIMEOUT = Result.timeout(2.0)
ELIGIBLE_CODES = {"AP", "AX", "TP", "TX"}


def policy(fail: int = 3, succeed: int = 2, mode: str = "all") -> health.HealthPolicy:
    return health.HealthPolicy(fail, succeed, health.ProbingMode.parse(mode))


def feed(record: HealthRecord, results: list[Result], pol: health.HealthPolicy) -> list[object]:
    return [health.apply(record, r, pol, float(t)) for t, r in enumerate(results, start=1)]


# --- codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"learned": HealthState.ACTIVE, "probing": True}, "AP"),
        ({"learned": HealthState.ACTIVE, "probing": False}, "AX"),
        ({"learned": HealthState.TRYING, "probing": True}, "TP"),
        ({"learned": HealthState.TRYING, "probing": False}, "TX"),
        ({"learned": HealthState.INACTIVE, "probing": True}, "IP"),
        ({"learned": HealthState.INACTIVE, "probing": False}, "IX"),
        ({"learned": HealthState.COMING_UP, "probing": True}, "AX"),
        ({"learned": HealthState.COMING_UP, "probing": False}, "AX"),
        ({"learned": HealthState.ACTIVE, "probing": True, "disabled": True}, "DX"),
        ({"learned": HealthState.INACTIVE, "draining": True}, "DR"),
        ({"learned": HealthState.ACTIVE, "drain_until": 9.0}, "DR"),
        ({"disabled": True, "draining": True}, "DX"),
    ],
)
def test_two_letter_codes_follow_state_and_probing(fields: dict[str, object], code: str) -> None:
    record = HealthRecord(**fields)  # type: ignore[arg-type]
    assert record.code == code
    coming_up = record.state is HealthState.COMING_UP
    assert record.eligible == (code in ELIGIBLE_CODES and not coming_up)


def test_learned_state_cannot_be_an_override() -> None:
    with pytest.raises(ValueError, match="learned"):
        HealthRecord(learned=HealthState.DISABLED)


# --- thresholds ------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_inactive_only_after_failure_threshold_consecutive_failures(threshold: int) -> None:
    record = HealthRecord(probing=True)
    pol = policy(fail=threshold)
    events = feed(record, [FAIL] * (threshold - 1), pol)
    assert record.code == ("TP" if threshold > 1 else "AP")
    assert events == [None] * (threshold - 1)
    event = health.apply(record, TIMEOUT, pol, 99.0)
    assert record.code == "IP"
    assert isinstance(event, health.DestinationDown)
    assert (event.previous, event.code, event.at) == ("TP" if threshold > 1 else "AP", "IP", 99.0)
    assert record.changed_at == 99.0


def test_one_success_breaks_a_failure_streak() -> None:
    record = HealthRecord(probing=True)
    pol = policy(fail=3)
    feed(record, [FAIL, FAIL, OK, FAIL, FAIL], pol)
    assert record.code == "TP"
    assert record.failures == 2
    assert record.successes == 0


@pytest.mark.parametrize("threshold", [1, 2, 4])
def test_active_again_only_after_success_threshold_consecutive_successes(threshold: int) -> None:
    record = HealthRecord(learned=HealthState.INACTIVE, probing=True)
    pol = policy(succeed=threshold)
    assert feed(record, [OK] * (threshold - 1), pol) == [None] * (threshold - 1)
    assert record.successes == threshold - 1
    if threshold > 1:
        # Coming up: shown AX, but not yet given new dialogs.
        assert record.code == "AX"
        assert record.state is HealthState.COMING_UP
        assert not record.eligible
        assert record.reason.startswith(f"coming up: 1 of {threshold} successes")
    else:
        assert record.code == "IP"
    event = health.apply(record, OK, pol, 50.0)
    assert record.code == "AP"
    assert record.eligible
    assert isinstance(event, health.DestinationUp)
    assert event.previous == ("AX" if threshold > 1 else "IP")
    assert record.reason == f"{threshold} consecutive successes (success)"


def test_a_restarted_destination_shows_ip_then_ax_then_ap() -> None:
    record = HealthRecord(probing=True)
    pol = policy(fail=2, succeed=3)
    codes = []
    for result in [TIMEOUT, TIMEOUT, TIMEOUT, OK, OK, OK, OK]:
        health.apply(record, result, pol, 1.0)
        codes.append((record.code, record.eligible))
    assert codes == [
        ("TP", True),
        ("IP", False),
        ("IP", False),
        ("AX", False),
        ("AX", False),
        ("AP", True),
        ("AP", True),
    ]


def test_a_failure_while_coming_up_starts_the_recovery_over() -> None:
    record = HealthRecord(learned=HealthState.INACTIVE, probing=True)
    pol = policy(fail=3, succeed=3)
    feed(record, [OK, OK], pol)
    assert record.code == "AX"
    assert health.apply(record, FAIL, pol, 5.0) is None
    assert record.code == "IP"  # not TP: it never became eligible
    assert record.reason.startswith("failed while coming up")
    feed(record, [OK, OK], pol)
    assert record.code == "AX"
    health.apply(record, OK, pol, 9.0)
    assert record.code == "AP"


def test_active_not_probed_keeps_kamailios_ax_and_is_eligible() -> None:
    # Mode inactive: once recovered, the destination is no longer probed.
    record = HealthRecord(learned=HealthState.INACTIVE, probing=True)
    pol = policy(succeed=2, mode="inactive")
    health.apply(record, OK, pol, 1.0)
    assert (record.code, record.eligible, record.probing) == ("AX", False, True)
    assert health.wants_probe(record, pol)  # coming up: still probed
    health.apply(record, OK, pol, 2.0)
    assert (record.code, record.eligible, record.probing) == ("AX", True, False)
    assert record.state is HealthState.ACTIVE
    assert not health.wants_probe(record, pol)


ACT, TRY, INA, UP = (
    HealthState.ACTIVE,
    HealthState.TRYING,
    HealthState.INACTIVE,
    HealthState.COMING_UP,
)


@pytest.mark.parametrize(
    ("learned", "result", "streak", "after", "reason"),
    [
        # streak: consecutive results of the same kind before this one (thresholds 3 and 3);
        # reason: "old" where the code does not change, so nothing new is recorded.
        (ACT, OK, 0, ACT, "old"),
        (ACT, OK, 2, ACT, "old"),
        (ACT, FAIL, 0, TRY, "500 Server Error"),
        (ACT, TIMEOUT, 2, INA, "3 consecutive failures (timeout)"),
        (TRY, OK, 0, ACT, "success"),
        (TRY, OK, 2, ACT, "success"),
        (TRY, FAIL, 1, TRY, "old"),
        (TRY, FAIL, 2, INA, "3 consecutive failures (500 Server Error)"),
        (INA, OK, 0, UP, "coming up: 1 of 3 successes (success)"),
        (INA, OK, 2, ACT, "3 consecutive successes (success)"),
        (INA, TIMEOUT, 0, INA, "old"),
        (INA, FAIL, 2, INA, "old"),
        (UP, OK, 1, UP, "old"),
        (UP, OK, 2, ACT, "3 consecutive successes (success)"),
        (UP, FAIL, 0, INA, "failed while coming up (500 Server Error)"),
        (UP, TIMEOUT, 2, INA, "3 consecutive failures (timeout)"),
    ],
)
def test_every_learned_state_and_result(
    learned: HealthState, result: Result, streak: int, after: HealthState, reason: str
) -> None:
    success = result.outcome is Outcome.SUCCESS
    record = HealthRecord(
        learned=learned,
        probing=True,
        successes=streak if success else 1,
        failures=1 if success else streak,
        reason="old",
    )
    health.apply(record, result, policy(fail=3, succeed=3), 1.0)
    assert record.learned is after
    assert record.reason == reason
    # One kind of result breaks the other kind's streak.
    assert (record.successes, record.failures) == ((streak + 1, 0) if success else (0, streak + 1))


# --- overrides -------------------------------------------------------------------


def test_disabled_is_never_lifted_by_results() -> None:
    record = HealthRecord(learned=HealthState.INACTIVE, disabled=True)
    assert (
        feed(record, [OK] * 10 + [Result.overloaded(1.0)] + [OK] * 5, policy(succeed=1))
        == [None] * 16
    )
    assert record.code == "DX"
    assert record.learned is HealthState.INACTIVE


def test_a_configured_drain_is_kept_while_learned_health_is_tracked() -> None:
    record = HealthRecord(draining=True)
    feed(record, [FAIL] * 3, policy(fail=3))
    assert record.code == "DR"
    assert record.learned is HealthState.INACTIVE
    feed(record, [OK] * 5, policy(succeed=2))
    assert (record.code, record.learned) == ("DR", HealthState.ACTIVE)


def test_503_retry_after_drains_until_the_deadline() -> None:
    record = HealthRecord(probing=True)
    pol = policy()
    down = health.apply(record, Result.overloaded(30.0), pol, 100.0)
    assert isinstance(down, health.DestinationDown)
    assert record.code == "DR"
    assert "Retry-After" in down.reason
    assert health.apply(record, OK, pol, 120.0) is None  # before the deadline
    assert record.code == "DR"
    up = health.apply(record, OK, pol, 130.0)
    assert isinstance(up, health.DestinationUp)
    assert record.code == "AP"


def test_expire_drain_ends_a_due_drain_without_a_probe() -> None:
    record = HealthRecord(probing=False)
    health.apply(record, Result.overloaded(5.0), policy(mode="off"), 10.0)
    assert health.expire_drain(record, 14.9) is None
    event = health.expire_drain(record, 15.0)
    assert isinstance(event, health.DestinationUp)
    assert record.code == "AX"
    assert health.expire_drain(record, 99.0) is None


# --- probing flag by mode --------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "after_failure", "after_recovery"),
    [
        ("all", "TP", "AP"),
        ("failed", "TP", "AX"),
        ("inactive", "TX", "AX"),
        ("off", "TX", "AX"),
        ("flagged", "TX", "AX"),  # flag never set by results
    ],
)
def test_probing_flag_follows_the_mode(mode: str, after_failure: str, after_recovery: str) -> None:
    record = HealthRecord(probing=False)
    pol = policy(fail=2, succeed=1, mode=mode)
    health.apply(record, FAIL, pol, 1.0)  # passive marking: a failed call
    assert record.code == after_failure
    health.apply(record, FAIL, pol, 2.0)
    if mode in ("all", "failed", "inactive"):
        assert record.code == "IP"
        assert health.wants_probe(record, pol)
    health.apply(record, OK, pol, 3.0)
    assert record.code == after_recovery


def test_flagged_mode_keeps_the_tables_flag() -> None:
    record = HealthRecord(probing=True)
    pol = policy(fail=1, mode="flagged")
    feed(record, [FAIL, OK, OK, OK], pol)
    assert record.code == "AP"
    assert health.wants_probe(record, pol)


def test_wants_probe() -> None:
    assert health.wants_probe(HealthRecord(probing=False), policy(mode="all"))
    assert not health.wants_probe(HealthRecord(probing=True), policy(mode="off"))
    assert not health.wants_probe(HealthRecord(disabled=True), policy(mode="all"))
    assert not health.wants_probe(HealthRecord(probing=False), policy(mode="failed"))
    assert health.wants_probe(HealthRecord(probing=True), policy(mode="failed"))
    assert health.wants_probe(HealthRecord(draining=True), policy(mode="all"))


@pytest.mark.parametrize(
    ("value", "mode"),
    [(0, "failed"), (1, "all"), ("2", "inactive"), (3, "flagged"), ("OFF", "off")],
)
def test_probing_modes_accept_kamailio_numbers(value: str | int, mode: str) -> None:
    assert health.ProbingMode.parse(value).value == mode


@pytest.mark.parametrize("value", [4, "sometimes", True])
def test_unknown_probing_modes_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="probing mode"):
        health.ProbingMode.parse(value)  # type: ignore[arg-type]


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold"):
        health.HealthPolicy(failure_threshold=0)


# --- admin set-state -------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "code", "expected"),
    [
        ({"learned": HealthState.INACTIVE, "probing": True}, "ap", "AP"),
        ({"learned": HealthState.INACTIVE, "probing": True}, "ax", "AX"),
        ({"learned": HealthState.INACTIVE, "probing": True}, "a", "AP"),  # flag kept
        ({"learned": HealthState.ACTIVE, "probing": False}, "ip", "IP"),
        ({"learned": HealthState.ACTIVE}, "tx", "TX"),
        ({"learned": HealthState.ACTIVE, "probing": True}, "DX", "DX"),
        ({"learned": HealthState.ACTIVE}, "d", "DX"),
        ({"learned": HealthState.ACTIVE}, "dr", "DR"),
        ({"disabled": True}, "ap", "AP"),
        ({"draining": True, "drain_until": 50.0}, "ax", "AX"),
    ],
)
def test_set_admin_state(start: dict[str, object], code: str, expected: str) -> None:
    record = HealthRecord(failures=2, successes=1, **start)  # type: ignore[arg-type]
    was_eligible = record.eligible
    event = health.set_admin_state(record, code, 7.0)
    assert record.code == expected
    if record.eligible != was_eligible:
        assert isinstance(
            event, health.DestinationUp if record.eligible else health.DestinationDown
        )
        assert event.reason == f"set-state {code.lower()}"
    else:
        assert event is None
    if expected[0] in "AIT":
        assert (record.failures, record.successes) == (0, 0)


def test_disable_keeps_the_learned_state_underneath() -> None:
    record = HealthRecord(learned=HealthState.TRYING, probing=True)
    health.set_admin_state(record, "dx", 1.0)
    assert record.learned is HealthState.TRYING


@pytest.mark.parametrize("code", ["", "dp", "up", "apx", "x"])
def test_unknown_admin_states_are_rejected(code: str) -> None:
    with pytest.raises(health.InvalidStateError, match="unknown state"):
        health.set_admin_state(HealthRecord(), code, 0.0)


# --- every state x every result sequence -------------------------------------------

LEARNED = [HealthState.ACTIVE, HealthState.TRYING, HealthState.INACTIVE, HealthState.COMING_UP]
DOWN = (HealthState.INACTIVE, HealthState.COMING_UP)

results = st.one_of(
    st.sampled_from([OK, FAIL, TIMEOUT]),
    st.floats(min_value=0, max_value=5).map(Result.overloaded),
)
records = st.builds(
    HealthRecord,
    learned=st.sampled_from(LEARNED),
    probing=st.booleans(),
    disabled=st.booleans(),
    draining=st.booleans(),
)
policies = st.builds(
    health.HealthPolicy,
    failure_threshold=st.integers(1, 4),
    success_threshold=st.integers(1, 4),
    mode=st.sampled_from(list(health.ProbingMode)),
)


@given(records, policies, st.lists(results, max_size=40))
def test_invariants_over_any_result_sequence(
    record: HealthRecord, pol: health.HealthPolicy, sequence: list[Result]
) -> None:
    disabled, draining = record.disabled, record.draining
    flag = record.probing
    fail_run = succ_run = 0
    for t, result in enumerate(sequence, start=1):
        before_state, before_eligible = record.learned, record.eligible
        event = health.apply(record, result, pol, float(t))

        # Overrides are never lifted by results.
        assert record.disabled == disabled
        assert record.draining == draining
        if disabled:
            assert record.code == "DX"
            assert event is None
            continue

        if result.outcome is Outcome.SUCCESS:
            succ_run, fail_run = succ_run + 1, 0
        elif result.outcome in (Outcome.FAILURE, Outcome.TIMEOUT):
            fail_run, succ_run = fail_run + 1, 0
        assert (record.failures, record.successes) == (fail_run, succ_run)

        # Thresholds: inactive exactly when enough failures, or still recovering.
        if fail_run >= pol.failure_threshold:
            assert record.learned is HealthState.INACTIVE
        if record.learned is HealthState.INACTIVE and before_state not in DOWN:
            assert fail_run >= pol.failure_threshold
        if before_state in DOWN and record.learned not in DOWN:
            assert succ_run >= pol.success_threshold
            assert record.learned is HealthState.ACTIVE
        if result.outcome is Outcome.SUCCESS and before_state not in DOWN:
            assert record.learned is HealthState.ACTIVE
        # Coming up (AX, not eligible) exactly while recovering below the threshold.
        if record.learned is HealthState.COMING_UP:
            assert 0 < succ_run < pol.success_threshold or before_state is HealthState.COMING_UP
            assert not record.eligible
            if not (record.disabled or record.draining or record.drain_until is not None):
                assert record.code == "AX"
        if before_state in DOWN and result.outcome is Outcome.SUCCESS:
            expected = (
                HealthState.ACTIVE if succ_run >= pol.success_threshold else HealthState.COMING_UP
            )
            assert record.learned is expected
        if before_state is HealthState.COMING_UP and result.outcome in (
            Outcome.FAILURE,
            Outcome.TIMEOUT,
        ):
            assert record.learned is HealthState.INACTIVE

        # A timed drain makes the destination DR until a later result.
        if result.outcome is Outcome.OVERLOADED:
            assert record.code == "DR"

        # The code is a function of the state; events mark eligibility changes.
        coming_up = record.state is HealthState.COMING_UP
        assert record.eligible == (record.code in ELIGIBLE_CODES and not coming_up)
        if record.eligible and not before_eligible:
            assert isinstance(event, health.DestinationUp)
        elif before_eligible and not record.eligible:
            assert isinstance(event, health.DestinationDown)
        else:
            assert event is None

        # The probing flag per mode.
        timed_drain = record.drain_until is not None
        if pol.mode is health.ProbingMode.ALL:
            assert record.probing
        elif pol.mode is health.ProbingMode.OFF:
            assert not record.probing
        elif pol.mode is health.ProbingMode.FLAGGED:
            assert record.probing == flag
        elif pol.mode is health.ProbingMode.FAILED:
            assert record.probing == (record.learned is not HealthState.ACTIVE or timed_drain)
        else:
            assert record.probing == (record.learned in DOWN or timed_drain)


def test_coming_up_to_active_in_inactive_mode_says_why_though_the_code_stays_ax() -> None:
    # In probing mode "inactive" an active destination is not probed: AX both while it comes
    # up and once it is up, so only its eligibility and reason tell the two apart.
    pol = policy(fail=1, succeed=2, mode="inactive")
    record = HealthRecord()
    feed(record, [FAIL, OK], pol)
    assert (record.code, record.eligible) == ("AX", False)
    coming_up_reason = record.reason
    event = health.apply(record, OK, pol, 10.0)
    assert isinstance(event, health.DestinationUp)
    assert (record.code, record.eligible) == ("AX", True)
    assert record.reason != coming_up_reason
    assert record.changed_at == 10.0


def test_takes_down_says_which_result_would_end_eligibility() -> None:
    policy = health.HealthPolicy(failure_threshold=2)
    record = HealthRecord()
    failure = Result.failure("x")
    assert not health.takes_down(record, failure, policy)  # the first failure only makes it TRYING
    health.apply(record, failure, policy, 1.0)
    assert health.takes_down(record, failure, policy)
    assert health.takes_down(record, Result.timeout(1.0), policy)
    assert not health.takes_down(record, Result.success(), policy)
    assert health.takes_down(HealthRecord(), Result.overloaded(5.0), policy)  # a drain
    health.apply(record, failure, policy, 2.0)
    assert not health.takes_down(record, failure, policy)  # already out
