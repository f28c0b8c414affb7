"""What waking from idle costs: both balancers at a rate they both hold, with the machine's
cores left to go idle between messages (as in every other phase) and with them kept awake.

At a few hundred calls/s a balancer sleeps between most messages, and every message wakes it.
On a virtual machine a core with nothing to run halts, and bringing it back is slow; that time
is charged to whoever was woken (in a profile it lands in the scheduler's switch to the woken
process), and what runs right after runs slower too. Here a busy loop per core at the lowest
priority there is (``SCHED_IDLE``: it runs only when nothing else wants the core, so it takes
no time from the balancers or the sipp processes) keeps the cores from halting; the balancers'
CPU per call with and without it says how much of the figure at that rate is the machine's
cost of waking, and the wake-ups per call (the balancer's processes woken from a wait) say how
often each pays it. Rounds alternate the order of the two conditions and of the two
balancers; every try runs on fresh processes, warmed up by 3 s of calls at half the rate.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ladder import take_turns
from rigs import KamailioRig, Rig, Settings, SipdispatchBuild, SipdispatchRig

from sipphelpers import SippLab

__all__ = ["compare", "cores_kept_awake"]

#: a busy loop that gives way to everything: pinned to one core, SCHED_IDLE, bounded in time
_SPIN = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
"""
CONDITIONS = ("idle", "awake")


@contextmanager
def cores_kept_awake(limit_s: float, also: Collection[int] = ()) -> Iterator[None]:
    """A ``SCHED_IDLE`` busy loop on every core this process may use and on those in
    ``also`` (the balancers' when set apart), for at most ``limit_s`` seconds (stopped on
    leaving)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", _SPIN, str(core), str(limit_s)])
        for core in sorted(os.sched_getaffinity(0) | set(also))
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def compare(
    lab: SippLab,
    out: Path,
    settings: Settings,
    build: SipdispatchBuild,
    *,
    rate: float,
    seconds: float,
    rounds: int,
    log: Any,
) -> dict[str, Any]:
    """CPU and wake-ups per call of sipdispatch (one worker) and Kamailio (``children=1``) at
    ``rate``, with the cores left to idle and kept awake: every try, medians, and the
    median ratios (sipdispatch / Kamailio in each condition, awake / idle for each)."""
    rigs: list[Rig] = [
        SipdispatchRig(lab, out, settings, "wk-sd", build),
        KamailioRig(lab, out, settings, "wk-kam"),
    ]
    cpu: dict[str, dict[str, list[float]]] = {c: {rig.kind: [] for rig in rigs} for c in CONDITIONS}
    woken: dict[str, dict[str, list[float]]] = {
        c: {rig.kind: [] for rig in rigs} for c in CONDITIONS
    }
    failed = {c: {rig.kind: 0 for rig in rigs} for c in CONDITIONS}
    for round_no in range(rounds):
        order = CONDITIONS if round_no % 2 == 0 else CONDITIONS[::-1]
        for condition in order:
            ordered = rigs if round_no % 2 == 0 else rigs[::-1]
            with (
                cores_kept_awake(4 * (seconds + 10), settings.balancer_cpus)
                if condition == "awake"
                else nullcontext()
            ):
                steps = next(take_turns(lab, ordered, rate, seconds, 1, warm_up=3.0))
            for rig, step in steps:
                failed[condition][rig.kind] += step.failed
                per_call = step.balancer_wakeups / max(1, step.created)
                if step.passed:
                    cpu[condition][rig.kind].append(step.cpu_ms_per_call)
                    woken[condition][rig.kind].append(per_call)
                log(
                    f"  {rig.label:32s} cores {condition:5s} {rate:5.0f} cps: "
                    f"{step.cpu_ms_per_call:.3f} ms CPU/call, {per_call:.2f} wake-ups/call, "
                    f"{step.failed} failed of {step.calls}"
                )
    medians = {c: {k: _median(v) for k, v in cpu[c].items()} for c in CONDITIONS}
    result: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "rounds": rounds,
        "cpu_ms_per_call": cpu,
        "median_cpu_ms_per_call": medians,
        "wakeups_per_call": woken,
        "median_wakeups_per_call": {
            c: {k: _median(v) for k, v in woken[c].items()} for c in CONDITIONS
        },
        "failed_calls": failed,
        "sd_over_kam": {c: medians[c]["sipdispatch"] / medians[c]["kamailio"] for c in CONDITIONS},
        "awake_over_idle": {
            kind: medians["awake"][kind] / medians["idle"][kind] for kind in medians["idle"]
        },
    }
    log(
        f"  at {rate:.0f} cps, CPU per call with the cores kept awake / left to idle: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in result["awake_over_idle"].items())
        + "; sipdispatch / Kamailio: "
        + ", ".join(f"cores {c} {v:.2f}x" for c, v in result["sd_over_kam"].items())
    )
    return result


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
