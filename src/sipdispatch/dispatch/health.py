"""Destination health: learned state, admin overrides, thresholds, two-letter codes.

A destination's health has two layers:

* the **learned** state, moved by results (OPTIONS probes, and real traffic
  for passive marking: a failed call counts exactly like a failed probe).
  Fail and success counters are separate, and each is reset by a result of
  the other kind. The transitions::

      ACTIVE --failure--> TRYING --`failure_threshold` consecutive--> INACTIVE
      TRYING --success--> ACTIVE          (the failure streak is broken)
      INACTIVE --success--> COMING_UP     (below `success_threshold`)
      COMING_UP --successes reach `success_threshold`--> ACTIVE
      COMING_UP --failure--> INACTIVE     (the recovery starts over)

  With `success_threshold` 1 an INACTIVE destination becomes ACTIVE on its
  first success, without passing through COMING_UP. Reaching
  `failure_threshold` from any state makes it INACTIVE;
* **overrides** that results never lift: ``DISABLED`` (admin, or `disabled`
  / flag 4 in the table) and ``DRAINING`` (endpoint terminating, or admin
  ``dr``). A 503 with Retry-After from the destination is a *timed* drain:
  it ends with the first result after the deadline (or `expire_drain`).
  Under a drain the learned state keeps being updated, so that it is
  accurate when the drain ends; under ``DISABLED`` results are ignored.

The **probing flag** says whether OPTIONS are being sent to the destination;
it depends on the probing mode (Kamailio's ``ds_probing_mode``):

======== ==== ===============================================================
mode     kam. probed destinations
======== ==== ===============================================================
failed   0    those not ACTIVE (flag set on failure, cleared when ACTIVE)
all      1    every destination that is not disabled (the default)
inactive 2    INACTIVE and COMING_UP ones (flag set on becoming INACTIVE)
flagged  3    those flagged in the table (flag 8), never changed by results
off      --   none (passive marking only; INACTIVE stays until `set-state`)
======== ==== ===============================================================

Two-letter codes, as shown by ``kamcmd dispatcher.list`` (first letter the
state, second ``P`` probing or ``X`` not):

* ``AP`` active, probed.
* ``AX`` has two meanings, told apart by eligibility (and the reason shown
  by ``sipdispatch-ctl list``):

  - **coming up** (``COMING_UP``): an INACTIVE destination that answered
    probes but has fewer than `success_threshold` consecutive successes.
    *Not* eligible for new dialogs yet. This is the "AX then AP" a user
    sees when a gateway restarts under probing mode ``all``.
  - **active, not probed** (Kamailio's meaning, kept): ACTIVE in a mode
    that does not probe it (failed/inactive after recovery, flagged without
    flag 8, off), or after an admin ``set-state ax``. Eligible.

* ``TP`` / ``TX`` trying: failed, below the failure threshold; still
  selected for new dialogs, as in Kamailio. Mode ``all`` (and Kamailio's
  ``ds_probing_mode=1``) shows ``TP``; modes that do not probe active
  destinations show ``TX`` after a failed call.
* ``IP`` / ``IX`` inactive: no new dialogs.
* ``DX`` admin disabled: no new dialogs, never probed, never lifted by results.
* ``DR`` draining: no new dialogs; in-dialog requests still pass.

Eligible for new dialogs: ``AP``, ``AX`` (active, not probed), ``TP``,
``TX``. Never: ``AX`` while coming up, ``IP``, ``IX``, ``DX``, ``DR``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from sipdispatch.dispatch import latency as _latency
from sipdispatch.sip.identityenum import IdentityEnum

__all__ = [
    "ADMIN_CODES",
    "DestinationDown",
    "DestinationUp",
    "Event",
    "HealthPolicy",
    "HealthRecord",
    "HealthState",
    "InvalidStateError",
    "Outcome",
    "ProbingMode",
    "Result",
    "apply",
    "expire_drain",
    "set_admin_state",
    "takes_down",
    "wants_probe",
]


class HealthState(IdentityEnum):
    """Where a destination stands: four learned states, then the two overrides.

    The two-letter code a user sees is computed from the state and the probing flag
    (`HealthRecord.code`), so the values here are names, not codes.
    """

    ACTIVE = "active"
    TRYING = "trying"  # failed, below the failure threshold: still eligible
    INACTIVE = "inactive"
    COMING_UP = "coming-up"  # inactive, answering again, below the success threshold
    DISABLED = "disabled"
    DRAINING = "draining"


class ProbingMode(enum.Enum):
    FAILED = "failed"
    ALL = "all"
    INACTIVE = "inactive"
    FLAGGED = "flagged"
    OFF = "off"

    @classmethod
    def parse(cls, value: str | int) -> ProbingMode:
        """Accept a name or Kamailio's `ds_probing_mode` number."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value in _KAMAILIO_MODES:
                return _KAMAILIO_MODES[value]
        elif isinstance(value, str):
            text = value.strip().lower()
            if text.isdigit() and int(text) in _KAMAILIO_MODES:
                return _KAMAILIO_MODES[int(text)]
            for mode in cls:
                if mode.value == text:
                    return mode
        names = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown probing mode {value!r}; expected one of {names} or 0-3")


_KAMAILIO_MODES: Final = {
    0: ProbingMode.FAILED,
    1: ProbingMode.ALL,
    2: ProbingMode.INACTIVE,
    3: ProbingMode.FLAGGED,
}


class Outcome(IdentityEnum):
    SUCCESS = "success"  # an accepted reply code
    FAILURE = "failure"  # any other reply, or a transport error
    TIMEOUT = "timeout"  # no reply in time
    OVERLOADED = "overloaded"  # 503 with Retry-After: a drain signal


@dataclass(frozen=True, slots=True)
class Result:
    """One observation of a destination, from a probe or from real traffic."""

    outcome: Outcome
    rtt: float | None = None  # measured round trip, seconds
    waited: float | None = None  # for TIMEOUT: how long we waited
    retry_after: float = 0.0  # for OVERLOADED
    reason: str = ""

    @classmethod
    def success(cls, rtt: float | None = None, reason: str = "") -> Result:
        return cls(Outcome.SUCCESS, rtt=rtt, reason=reason)

    @classmethod
    def failure(cls, reason: str = "", rtt: float | None = None) -> Result:
        return cls(Outcome.FAILURE, rtt=rtt, reason=reason)

    @classmethod
    def timeout(cls, waited: float, reason: str = "timeout") -> Result:
        return cls(Outcome.TIMEOUT, waited=waited, reason=reason)

    @classmethod
    def overloaded(cls, retry_after: float, rtt: float | None = None) -> Result:
        return cls(
            Outcome.OVERLOADED,
            rtt=rtt,
            retry_after=max(0.0, retry_after),
            reason=f"503 Retry-After {retry_after:g}s",
        )


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    failure_threshold: int = 3
    success_threshold: int = 2
    mode: ProbingMode = ProbingMode.ALL

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("health thresholds must be >= 1")


@dataclass(slots=True)
class HealthRecord:
    """Mutable health of one destination, owned by the destination table."""

    learned: HealthState = HealthState.ACTIVE
    probing: bool = False
    disabled: bool = False
    draining: bool = False
    drain_until: float | None = None
    failures: int = 0  # consecutive failed results
    successes: int = 0  # consecutive successful results
    changed_at: float = 0.0  # when the two-letter code last changed
    reason: str = ""
    latency: _latency.LatencyStats = field(default_factory=_latency.LatencyStats)

    def __post_init__(self) -> None:
        if self.learned not in _LEARNED:
            raise ValueError(f"learned state must be one of {_LEARNED}, got {self.learned}")

    @property
    def state(self) -> HealthState:
        if self.disabled:
            return HealthState.DISABLED
        if self.draining or self.drain_until is not None:
            return HealthState.DRAINING
        return self.learned

    @property
    def code(self) -> str:
        state = self.state
        if state is HealthState.DISABLED:
            return "DX"
        if state is HealthState.DRAINING:
            return "DR"
        if state is HealthState.COMING_UP:
            return "AX"  # whatever the probing flag: "coming up"
        return _LETTERS[state] + ("P" if self.probing else "X")

    @property
    def eligible(self) -> bool:
        """Whether new dialogs may be sent here."""
        # Compared by identity: hashing an Enum member runs interpreted Python, and this is
        # asked of every candidate of every call.
        state = self.state
        return state is HealthState.ACTIVE or state is HealthState.TRYING


_LETTERS: Final = {HealthState.ACTIVE: "A", HealthState.TRYING: "T", HealthState.INACTIVE: "I"}
_LEARNED: Final = (
    HealthState.ACTIVE,
    HealthState.TRYING,
    HealthState.INACTIVE,
    HealthState.COMING_UP,
)
_DOWN: Final = frozenset({HealthState.INACTIVE, HealthState.COMING_UP})


class _Step(IdentityEnum):
    """A result as the learned state machine sees it, once counted: its kind, and whether it
    makes the streak of its kind reach the policy's threshold."""

    SUCCESS = "success"
    ENOUGH_SUCCESSES = "enough successes"
    FAILURE = "failure"
    ENOUGH_FAILURES = "enough failures"


# Reasons recorded with a transition; `reason` is the result's own.
_PLAIN: Final = "{reason}"
_RECOVERED: Final = "{successes} consecutive successes ({reason})"
_RECOVERING: Final = "coming up: {successes} of {success_threshold} successes ({reason})"
_FAILED: Final = "{failures} consecutive failures ({reason})"
_RELAPSED: Final = "failed while coming up ({reason})"

# (learned state, step) -> (next learned state, reason), the transitions of the module
# docstring. Every pair is present: a missing one would be a KeyError, never a silent stay.
_TRANSITIONS: Final[dict[tuple[HealthState, _Step], tuple[HealthState, str]]] = {
    (HealthState.ACTIVE, _Step.SUCCESS): (HealthState.ACTIVE, _PLAIN),
    (HealthState.ACTIVE, _Step.ENOUGH_SUCCESSES): (HealthState.ACTIVE, _PLAIN),
    (HealthState.ACTIVE, _Step.FAILURE): (HealthState.TRYING, _PLAIN),
    (HealthState.ACTIVE, _Step.ENOUGH_FAILURES): (HealthState.INACTIVE, _FAILED),
    (HealthState.TRYING, _Step.SUCCESS): (HealthState.ACTIVE, _PLAIN),
    (HealthState.TRYING, _Step.ENOUGH_SUCCESSES): (HealthState.ACTIVE, _PLAIN),
    (HealthState.TRYING, _Step.FAILURE): (HealthState.TRYING, _PLAIN),
    (HealthState.TRYING, _Step.ENOUGH_FAILURES): (HealthState.INACTIVE, _FAILED),
    (HealthState.INACTIVE, _Step.SUCCESS): (HealthState.COMING_UP, _RECOVERING),
    (HealthState.INACTIVE, _Step.ENOUGH_SUCCESSES): (HealthState.ACTIVE, _RECOVERED),
    (HealthState.INACTIVE, _Step.FAILURE): (HealthState.INACTIVE, _PLAIN),
    (HealthState.INACTIVE, _Step.ENOUGH_FAILURES): (HealthState.INACTIVE, _FAILED),
    (HealthState.COMING_UP, _Step.SUCCESS): (HealthState.COMING_UP, _RECOVERING),
    (HealthState.COMING_UP, _Step.ENOUGH_SUCCESSES): (HealthState.ACTIVE, _RECOVERED),
    (HealthState.COMING_UP, _Step.FAILURE): (HealthState.INACTIVE, _RELAPSED),
    (HealthState.COMING_UP, _Step.ENOUGH_FAILURES): (HealthState.INACTIVE, _FAILED),
}


@dataclass(frozen=True, slots=True)
class DestinationUp:
    """The destination became eligible for new dialogs."""

    code: str
    previous: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class DestinationDown:
    """The destination stopped being eligible for new dialogs."""

    code: str
    previous: str
    reason: str
    at: float


Event = DestinationUp | DestinationDown


class InvalidStateError(ValueError):
    """An admin state code that `set_admin_state` does not know."""


def wants_probe(record: HealthRecord, policy: HealthPolicy) -> bool:
    """Whether the prober should send OPTIONS to this destination now."""
    if record.disabled or policy.mode is ProbingMode.OFF:
        return False
    return policy.mode is ProbingMode.ALL or record.probing


def takes_down(record: HealthRecord, result: Result, policy: HealthPolicy) -> bool:
    """Whether applying ``result`` would make an eligible destination ineligible (the
    failure that reaches the threshold, or a drain signal)."""
    if not record.eligible or record.disabled:
        return False
    if result.outcome is Outcome.SUCCESS:
        return False
    if result.outcome is Outcome.OVERLOADED:
        return result.retry_after > 0
    return record.failures + 1 >= policy.failure_threshold


def apply(record: HealthRecord, result: Result, policy: HealthPolicy, now: float) -> Event | None:
    """Fold one result into `record`; return an event if eligibility changed."""
    before = _snapshot(record)
    if result.rtt is not None:
        record.latency.observe(result.rtt)
    if result.outcome is Outcome.TIMEOUT:
        record.latency.observe_timeout(result.waited or 0.0)
    if record.disabled:
        return None  # DX: results never lift an admin decision
    expire_drain(record, now)
    reason = result.reason or result.outcome.value
    if result.outcome is Outcome.OVERLOADED:
        record.drain_until = now + result.retry_after
    else:
        record.learned, template = _TRANSITIONS[record.learned, _count(record, result, policy)]
        reason = template.format(
            reason=reason,
            successes=record.successes,
            success_threshold=policy.success_threshold,
            failures=record.failures,
        )
    _update_probing(record, policy.mode)
    return _finish(record, before, reason, now)


def _count(record: HealthRecord, result: Result, policy: HealthPolicy) -> _Step:
    """Count a success or failure in the record's streaks (one kind resets the other)."""
    if result.outcome is Outcome.SUCCESS:
        record.failures = 0
        record.successes += 1
        if record.successes >= policy.success_threshold:
            return _Step.ENOUGH_SUCCESSES
        return _Step.SUCCESS
    record.successes = 0
    record.failures += 1
    if record.failures >= policy.failure_threshold:
        return _Step.ENOUGH_FAILURES
    return _Step.FAILURE


def expire_drain(record: HealthRecord, now: float) -> Event | None:
    """End a Retry-After drain whose deadline has passed (call from a timer)."""
    if record.drain_until is None or now < record.drain_until:
        return None
    before = _snapshot(record)
    record.drain_until = None
    return _finish(record, before, "Retry-After elapsed", now)


ADMIN_CODES: Final = frozenset({"a", "ap", "ax", "i", "ip", "ix", "t", "tp", "tx", "d", "dx", "dr"})
_ADMIN_LEARNED: Final = {
    "a": HealthState.ACTIVE,
    "t": HealthState.TRYING,
    "i": HealthState.INACTIVE,
}


def set_admin_state(record: HealthRecord, code: str, now: float) -> Event | None:
    """Apply an operator's `set-state` (``ap``, ``ip``, ``dx``, ``dr``, ...).

    ``a``/``i``/``t`` set the learned state, reset both counters and lift
    any disable or drain; a second letter ``p``/``x`` sets the probing flag,
    no second letter keeps it. ``d``/``dx`` disables, ``dr`` drains: both keep
    the learned state underneath for when they are lifted.
    """
    text = code.strip().lower()
    if text not in ADMIN_CODES:
        known = ", ".join(sorted(ADMIN_CODES))
        raise InvalidStateError(f"unknown state {code!r}; expected one of {known}")
    before = _snapshot(record)
    if text == "dr":
        record.draining = True
    elif text[0] == "d":
        record.disabled = True
    else:
        record.disabled = record.draining = False
        record.drain_until = None
        record.learned = _ADMIN_LEARNED[text[0]]
        record.failures = record.successes = 0
        if len(text) == 2:
            record.probing = text[1] == "p"
    return _finish(record, before, f"set-state {text}", now)


def _update_probing(record: HealthRecord, mode: ProbingMode) -> None:
    draining = record.drain_until is not None
    if mode is ProbingMode.ALL:
        record.probing = True
    elif mode is ProbingMode.OFF:
        record.probing = False
    elif mode is ProbingMode.FAILED:
        record.probing = record.learned is not HealthState.ACTIVE or draining
    elif mode is ProbingMode.INACTIVE:
        record.probing = record.learned in _DOWN or draining
    # FLAGGED: the table's flag decides, results do not touch it.


def _snapshot(record: HealthRecord) -> tuple[bool, str]:
    return record.eligible, record.code


def _finish(
    record: HealthRecord, before: tuple[bool, str], reason: str, now: float
) -> Event | None:
    was_eligible, previous = before
    code = record.code
    # A destination that finishes coming up in a mode that stops probing it stays AX: the
    # change is its eligibility, and the reason must say so, not "coming up".
    if code != previous or record.eligible != was_eligible:
        record.changed_at = now
        record.reason = reason
    if record.eligible and not was_eligible:
        return DestinationUp(code, previous, reason, now)
    if was_eligible and not record.eligible:
        return DestinationDown(code, previous, reason, now)
    return None
