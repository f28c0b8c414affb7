"""Load steps and the calls-per-second ladder.

A *step* is one sipp caller placing ``rate`` calls/s for ``duration`` seconds through a rig
(INVITE, 100, 180, 200, ACK, ``call_ms`` pause, BYE, 200).  Around it we read the CPU time
of every balancer process, of the gateways and of the caller, and the busy time of the whole
machine (``/proc/stat``: other people's processes included), so a failed step says what ran
out: the balancer's core, the caller, or the machine.

A step *passes* when fewer than 0.1 % of the calls failed, every call was placed, and the
caller placed them at (nearly) the asked rate.  A rate that fails with fewer than 20 % failed
calls is tried once more on fresh processes before it counts (other people's load on a shared
machine comes in spikes; both tries are kept and reported); a collapse is not retried.
The ladder raises the rate by a factor while steps pass, then bisects between the last pass
and the first failure.  The rigs take turns,
one step each (sipdispatch, Kamailio, sipdispatch, ...), so slow drifts of the machine's load
hit both alike.
"""

from __future__ import annotations

import csv
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rigs import CALLER_SCENARIO, SIPP_BUFFER, Rig, machine_busy, udp_drops

from sipphelpers import SippLab, percentile

__all__ = ["LadderSpec", "StepResult", "run_ladders", "run_step", "take_turns"]

FAILED_LIMIT = 0.001  # < 0.1 % failed calls
RATE_KEPT = 0.95  # the caller must place calls at >= 95 % of the asked rate


@dataclass
class StepResult:
    balancer: str
    label: str
    rate: float
    duration_s: float
    calls: int
    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    returncode: int = 0
    achieved_rate: float = 0.0
    elapsed_s: float = 0.0
    balancer_cpu_s: float = 0.0
    busiest_process_cpu_s: float = 0.0  # the one process of the balancer that worked most
    # ... of it, while the calls were being placed (the caller's first calls/rate seconds)
    busiest_placing_cpu_s: float = 0.0
    placing_s: float = 0.0
    gateways_cpu_s: float = 0.0
    caller_cpu_s: float = 0.0
    machine_busy_cores: float = 0.0  # average over the window, every process on the machine
    # datagrams dropped because a receive buffer was full, by whose socket
    drops: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0
    balancer_system_s: float = 0.0  # of balancer_cpu_s, in the kernel (the socket calls)
    balancer_wakeups: int = 0  # the balancer's processes woken from a wait (see rigs.wakeups)
    other_cores: float = 0.0  # machine busy minus balancer, gateways and caller: other load
    attempt: int = 1
    superseded: bool = False  # a failed first try, repeated (see LadderSpec.retry_failed)
    failures: dict[str, int] = field(default_factory=dict)
    failure_kinds: dict[str, int] = field(default_factory=dict)  # from the caller's error log
    latency: dict[str, float] = field(default_factory=dict)  # from the caller's message log
    memory: dict[str, float] = field(default_factory=dict)  # the balancer's, after a passed step
    passed: bool = False
    reason: str = ""
    limit: str = ""

    @property
    def failed_fraction(self) -> float:
        return self.failed / max(1, self.created) if self.created else 1.0

    @property
    def busiest_share(self) -> float:
        """The busiest process's share of a core while calls were placed: a failing step's
        window also holds the caller's waits for answers that never come, which would dilute
        the share of a balancer that was short of a core."""
        if self.placing_s > 0:
            return self.busiest_placing_cpu_s / self.placing_s
        return self.busiest_process_cpu_s / max(1e-6, self.window_s)

    @property
    def cpu_ms_per_call(self) -> float:
        """Balancer CPU milliseconds per call = CPU seconds per 1,000 calls."""
        return self.balancer_cpu_s / max(1, self.created) * 1000

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failed_fraction"] = self.failed_fraction
        out["cpu_s_per_1000_calls"] = self.cpu_ms_per_call
        out["busiest_share"] = self.busiest_share
        return out


@contextmanager
def _cpu_later(rig: Rig, seconds: float) -> Iterator[dict[int, float]]:
    """The balancer's CPU seconds per process ``seconds`` from now, read then (empty if the
    block ends sooner)."""
    taken: dict[int, float] = {}
    timer = threading.Timer(seconds, lambda: taken.update(rig.cpu()))
    timer.start()
    try:
        yield taken
    finally:
        timer.cancel()


def _busiest_until(
    then: dict[int, float], before: dict[int, float], seconds: float
) -> tuple[float, float]:
    """(``seconds``, the busiest process's CPU seconds in them), or zeros when ``then`` was
    never read (the caller ended sooner)."""
    if not then:
        return 0.0, 0.0
    return seconds, max(then[pid] - before.get(pid, 0.0) for pid in then)


def _creation_rate(stat_rows: list[dict[str, str]], calls: int) -> float:
    """Calls/s the caller really placed: ``calls`` over the time from its start until the
    last call was created, interpolated between sipp's one-second statistics rows."""

    def epoch(row: dict[str, str], key: str) -> float:
        return float(row.get(key, "0").split("\t")[-1] or 0)

    if not stat_rows:
        return 0.0
    start = epoch(stat_rows[0], "StartTime")
    prev_t, prev_n = start, 0
    for row in stat_rows:
        t = epoch(row, "CurrentTime")
        n = int(row.get("TotalCallCreated", "0") or 0)
        if n >= calls:
            done = t if n == prev_n else prev_t + (calls - prev_n) / (n - prev_n) * (t - prev_t)
            return calls / max(1e-6, done - start)
        prev_t, prev_n = t, n
    return 0.0


def _stat_rows(path: Any) -> list[dict[str, str]]:
    try:
        with open(path, newline="", errors="replace") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return []
    if len(rows) < 2:
        return []
    header = rows[0]
    return [dict(zip(header, r, strict=False)) for r in rows[1:] if len(r) >= len(header) - 1]


def latency_figures(caller: Any) -> dict[str, float]:
    """p50/p90/p99/max (ms) of INVITE->100 and INVITE->200 from a caller's message log."""
    out: dict[str, float] = {}
    for name, delays in (("trying", caller.trying_delays()), ("answer", caller.answer_delays())):
        values = list(delays.values())
        out[f"{name}_n"] = len(values)
        for q in (50, 90, 99):
            out[f"{name}_p{q}_ms"] = percentile(values, q) * 1000
        out[f"{name}_max_ms"] = max(values) * 1000 if values else float("nan")
    return out


def run_step(  # noqa: PLR0915 - one figure after another
    lab: SippLab,
    rig: Rig,
    rate: float,
    duration_s: float,
    *,
    call_ms: int = 100,
    trace: bool = False,
    recv_timeout_ms: int = 5000,
) -> StepResult:
    """One caller run at ``rate`` through ``rig``, with the CPU of everyone around it."""
    calls = max(1, round(rate * duration_s))
    step = StepResult(rig.kind, rig.label, rate, duration_s, calls)
    caller = lab.caller(
        rig.hostport,
        rate=rate,
        calls=calls,
        call_ms=call_ms,
        trace_messages=trace,
        recv_timeout_ms=recv_timeout_ms,
        timeout_s=duration_s * 2 + call_ms / 1000 + recv_timeout_ms / 1000 + 20,
        # a rig may ask for more: sipdispatch's workers need a caller port per call
        extra_args=(*SIPP_BUFFER, *getattr(rig, "caller_args", ())),
        scenario=CALLER_SCENARIO,
    )
    drops0 = udp_drops()
    cpu0 = rig.cpu()
    sys0 = rig.system_cpu()
    wakeups0 = rig.wakeups()
    gw0 = rig.gateways_cpu()
    busy0, total0 = machine_busy()
    placing = calls / rate
    with _cpu_later(rig, placing) as at_placed:
        t0 = time.monotonic()
        result = caller.run()
        window = time.monotonic() - t0
    busy1, total1 = machine_busy()
    cpu1 = rig.cpu()
    sys1 = rig.system_cpu()
    step.balancer_wakeups = rig.wakeups() - wakeups0
    gw1 = rig.gateways_cpu()
    drops1 = udp_drops()

    def dropped(addresses: list[tuple[str, int]]) -> int:
        return sum(drops1.get(a, 0) - drops0.get(a, 0) for a in addresses)

    host, _, port = rig.hostport.rpartition(":")
    step.drops = {
        "balancer": dropped([(host, int(port))]),
        "gateways": dropped([(gw.ip, gw.port) for gw in rig.gateways]),
        "caller": dropped([(caller.local_ip, caller.port)]),
        "all": sum(drops1.values()) - sum(drops0.get(k, 0) for k in drops1),
    }
    per_pid = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
    step.created = result.created
    step.successful = result.successful
    step.failed = result.failed + max(0, calls - result.created)  # never placed: failed too
    step.retransmissions = result.retransmissions
    step.returncode = result.returncode
    step.elapsed_s = result.elapsed_s
    step.failures = dict(result.failures)
    step.achieved_rate = _creation_rate(_stat_rows(caller.stat_path), calls)
    step.balancer_cpu_s = sum(per_pid.values())
    step.balancer_system_s = sys1 - sys0
    step.busiest_process_cpu_s = max(per_pid.values(), default=0.0)
    step.placing_s, step.busiest_placing_cpu_s = _busiest_until(at_placed, cpu0, placing)
    step.gateways_cpu_s = gw1 - gw0
    step.caller_cpu_s = result.cpu_s or 0.0
    step.window_s = window
    step.machine_busy_cores = (busy1 - busy0) / max(1.0, total1 - total0) * (os.cpu_count() or 1)
    ours = step.balancer_cpu_s + step.gateways_cpu_s + step.caller_cpu_s
    step.other_cores = max(0.0, step.machine_busy_cores - ours / max(1e-6, window))
    if trace:
        step.latency = latency_figures(caller)
    _judge(step, result.stats)
    if step.passed:
        # bench/scenarios/uac.xml logs one "receive timeout ... jumping to label" line per
        # call (the wait for a late 180): of a passing step there is nothing else to read
        caller.error_path.unlink(missing_ok=True)
    else:
        step.failure_kinds = failure_kinds(caller.error_path)
        if step.failure_kinds:
            step.reason += (
                " [" + ", ".join(f"{n} x {what}" for what, n in step.failure_kinds.items()) + "]"
            )
    return step


_UNEXPECTED = re.compile(r"while expecting '([^']*)'[^\n]*?received '(SIP/2\.0 \d{3}[^\r\n']*)")
_TIMEOUT = re.compile(r"receive timeout on message [^,]*?:(\d+)(,)?")


def take_turns(
    lab: SippLab,
    rigs: Sequence[Rig],
    rate: float,
    seconds: float,
    rounds: int,
    *,
    while_up: Callable[[Rig], None] | None = None,
    warm_up: float = 0.0,
    share: Mapping[Rig, float] | None = None,
) -> Iterator[list[tuple[Rig, StepResult]]]:
    """One step of each rig at ``rate`` per round, every one on fresh processes (started for
    it, stopped after it: a process kept for all its tries differed steadily by several %
    from another, and an idle rig would probe in the background of another's try), forwards
    in one round and backwards in the next, so that no rig always runs first or last. Yields
    each round's steps; ``while_up`` reads what it needs from a rig before it stops.

    ``warm_up``: seconds of calls at half the rate before the step that counts, then 2 s of
    quiet (a gateway a warm-up failure marked down is probed up again). A fresh Kamailio
    fails calls at 3,000 calls/s in its first seconds that it carries once warm.

    ``share``: the fraction of ``rate`` a rig runs at, where it is not 1."""
    for round_no in range(rounds):
        steps = []
        for rig in rigs if round_no % 2 == 0 else rigs[::-1]:
            rig_rate = rate * (share or {}).get(rig, 1.0)
            rig.start()
            time.sleep(1.5)  # past the first probes and the start's own CPU
            try:
                if warm_up > 0:
                    run_step(lab, rig, rig_rate / 2, warm_up)
                    time.sleep(2.0)
                step = run_step(lab, rig, rig_rate, seconds)
                if while_up is not None:
                    while_up(rig)
            finally:
                rig.stop()
            steps.append((rig, step))
        yield steps


def failure_kinds(path: Path, limit: int = 3) -> dict[str, int]:
    """What the failed calls of a step died of, from the caller's error log: the unexpected
    responses (e.g. "503 No gateway available") and the timeouts, the most frequent first."""
    try:
        with path.open(errors="replace") as f:
            text = f.read(32 << 20)
    except OSError:
        return {}
    kinds: Counter[str] = Counter()
    for m in _UNEXPECTED.finditer(text):
        kinds[f"{m.group(2).strip()} instead of {m.group(1)}"] += 1
    for m in _TIMEOUT.finditer(text):
        if m.group(2) is None:  # ", jumping to label": the late-180 wait, not a failure
            kinds["no answer in time"] += 1
    return dict(kinds.most_common(limit))


def _judge(step: StepResult, stats: dict[str, str]) -> None:
    reasons = []
    if step.created < step.calls:
        reasons.append(f"only {step.created} of {step.calls} calls placed")
    if step.failed_fraction >= FAILED_LIMIT:
        reasons.append(f"{step.failed} failed calls ({step.failed_fraction:.2%})")
    if step.achieved_rate < RATE_KEPT * step.rate:
        reasons.append(f"caller placed {step.achieved_rate:.0f} calls/s of {step.rate:.0f}")
    if step.returncode not in (0, 1):
        reasons.append(f"sipp exited with {step.returncode}")
    step.passed = not reasons
    step.reason = "; ".join(reasons)
    # what ran out (for failed steps; for passing ones it says what is closest to its end)
    span = max(1e-6, step.window_s)
    busiest = step.busiest_share
    caller = step.caller_cpu_s / span
    machine = step.machine_busy_cores
    other = (
        f"; other processes on the machine used {step.other_cores:.2f} cores"
        if step.other_cores >= 0.2
        else ""
    )
    if step.drops.get("balancer", 0) > 0:
        step.limit = (
            f"the balancer's socket dropped {step.drops['balancer']} datagrams "
            f"(receive buffer full; busiest process at {busiest:.0%} of a core while calls "
            f"were placed{other})"
        )
    elif busiest >= 0.85:
        step.limit = f"balancer: its busiest process used {busiest:.0%} of a core{other}"
    elif caller >= 0.85:
        step.limit = f"sipp caller used {caller:.0%} of a core"
    elif machine >= 0.92 * (os.cpu_count() or 1):
        step.limit = (
            f"machine: {machine:.2f} of {os.cpu_count()} cores busy (sipp + balancer + other load)"
        )
    elif step.drops.get("gateways", 0) or step.drops.get("caller", 0):
        step.limit = (
            f"sipp's sockets dropped datagrams (gateways {step.drops['gateways']}, caller "
            f"{step.drops['caller']}): the load generator, not the balancer"
        )
    else:
        step.limit = (
            f"no single resource saturated on average (balancer {busiest:.0%}, "
            f"caller {caller:.0%}, machine {machine:.2f} cores): bursts, queues or drops"
        )


@dataclass
class LadderSpec:
    start_rate: float = 200.0
    growth: float = 1.5
    bisections: int = 2
    step_s: float = 10.0
    call_ms: int = 100
    max_rate: float = 20000.0
    granularity: float = 50.0  # rates are rounded to this
    min_gap: float = 0.05  # stop bisecting when fail/pass are within 5 %
    retry_failed: bool = True  # a failing rate gets a second try before it counts ...
    retry_below: float = 0.2  # ... unless most calls got through: a collapse is no spike


@dataclass
class _Climb:
    rig: Rig
    spec: LadderSpec
    rate: float
    steps: list[StepResult] = field(default_factory=list)
    best: float = 0.0  # highest passing rate
    first_fail: float | None = None
    bisections_done: int = 0
    done: bool = False

    def _round(self, rate: float) -> float:
        g = self.spec.granularity
        return max(g, round(rate / g) * g)

    def record(self, step: StepResult) -> None:
        self.steps.append(step)
        if step.passed:
            self.best = max(self.best, step.rate)
        else:
            self.first_fail = (
                step.rate if self.first_fail is None else min(self.first_fail, step.rate)
            )
        if self.first_fail is None:
            nxt = self._round(step.rate * self.spec.growth)
            if nxt > self.spec.max_rate:
                self.done = True
            self.rate = nxt
            return
        if self.best == 0.0:
            # failed at the lowest rate tried: go down until something passes
            nxt = self._round(step.rate / 2)
            if nxt >= step.rate or step.rate <= self.spec.granularity:
                self.done = True
            self.rate = nxt
            return
        gap = (self.first_fail - self.best) / self.best
        if self.bisections_done >= self.spec.bisections or gap <= self.spec.min_gap:
            self.done = True
            return
        nxt = self._round((self.best + self.first_fail) / 2)
        if nxt in (self.best, self.first_fail):
            self.done = True
            return
        self.bisections_done += 1
        self.rate = nxt


def run_ladders(
    lab: SippLab,
    rigs: Sequence[Rig],
    spec: LadderSpec,
    *,
    start_rates: Sequence[float] | None = None,
    log: Any = print,
    deadline: float | None = None,
) -> dict[str, list[StepResult]]:
    """Climb every rig's ladder, one step per rig in turn.  A rig is restarted (balancer and
    gateways) after each failed step, so an overload never leaks into the next step.  Stops
    early at ``deadline`` (time.monotonic()), keeping what was measured."""
    climbs = [
        _Climb(rig, spec, (start_rates[i] if start_rates else spec.start_rate))
        for i, rig in enumerate(rigs)
    ]
    while any(not c.done for c in climbs):
        for climb in climbs:
            if climb.done:
                continue
            if deadline is not None and time.monotonic() > deadline:
                log(f"  {climb.rig.label}: time budget spent, ladder stopped")
                climb.done = True
                continue
            step = _logged_step(lab, climb.rig, climb.rate, spec, log)
            if not step.passed and spec.retry_failed and step.failed_fraction < spec.retry_below:
                # Tell a spike of other load on the machine from the balancer's limit: a rate
                # that fails is tried once more on fresh processes; both attempts are kept.
                climb.rig.restart()
                step.superseded = True
                climb.steps.append(step)
                step = _logged_step(lab, climb.rig, climb.rate, spec, log, attempt=2)
            climb.record(step)
            if not step.passed:
                climb.rig.restart()
            else:
                step.memory = climb.rig.memory()
                time.sleep(0.5)
    return {c.rig.label: c.steps for c in climbs}


def _logged_step(
    lab: SippLab, rig: Rig, rate: float, spec: LadderSpec, log: Any, *, attempt: int = 1
) -> StepResult:
    step = run_step(lab, rig, rate, spec.step_s, call_ms=spec.call_ms)
    step.attempt = attempt
    verdict = "pass" if step.passed else f"FAIL ({step.reason})"
    again = " (2nd try)" if attempt > 1 else ""
    log(
        f"  {rig.label:28s} {step.rate:7.0f} cps{again}: {verdict}; "
        f"cpu {step.cpu_ms_per_call:.3f} s/1000 calls, busiest proc "
        f"{step.busiest_share:.0%}, other load "
        f"{step.other_cores:.2f} cores, retrans {step.retransmissions}, drops {step.drops}"
    )
    return step


def best_rate(steps: Sequence[StepResult]) -> float:
    return max((s.rate for s in steps if s.passed), default=0.0)


def memory_at_best(steps: Sequence[StepResult]) -> dict[str, Any]:
    """The balancer's memory right after its highest passed step, with that step's rate.
    (Read at the end of the ladder instead, it would be a fresh process's whenever the last
    step failed, since a failed step restarts the balancer.)"""
    passed = [s for s in steps if s.passed and s.memory]
    if not passed:
        return {}
    best = max(passed, key=lambda s: s.rate)
    return {**best.memory, "rate": best.rate}


def first_failure(steps: Sequence[StepResult]) -> StepResult | None:
    failed = [s for s in steps if not s.passed and not s.superseded]
    return min(failed, key=lambda s: s.rate) if failed else None
