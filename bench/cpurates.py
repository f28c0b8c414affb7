"""CPU per call of both balancers at fixed rates (2,000 and 3,000 calls/s), in the same run.

The ladder's CPU figure is taken at whatever rate both happened to pass, once per balancer;
this phase measures at the rates the design names, several times: the rigs take turns
(forwards in one round, backwards in the next), every try on fresh processes warmed up by
3 s of calls at half the rate, and the median of each counts, beside the paired ratio of
each round (slow drifts of the machine's load cancel in it). A try that fails (>= 0.1 %
failed calls) is reported and left out of the median: its CPU per call is not that of a
balancer keeping up.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ladder import take_turns
from rigs import KamailioRig, Settings, SipdispatchBuild, SipdispatchRig

from sipphelpers import SippLab

__all__ = ["compare"]


def compare(
    lab: SippLab,
    out: Path,
    settings: Settings,
    build: SipdispatchBuild,
    *,
    rates: list[float],
    seconds: float,
    rounds: int,
    log: Any,
) -> dict[str, Any]:
    """CPU s per 1,000 calls of sipdispatch (one worker) and Kamailio (``children=1``) at each
    of ``rates``: every try, the medians, the paired ratios and their median."""
    rigs = [
        SipdispatchRig(lab, out, settings, "cr-sd", build),
        KamailioRig(lab, out, settings, "cr-kam"),
    ]
    result: dict[str, Any] = {"seconds": seconds, "rounds": rounds, "rates": {}}
    for rate in rates:
        cpu: dict[str, list[float]] = {rig.kind: [] for rig in rigs}
        system: dict[str, list[float]] = {rig.kind: [] for rig in rigs}
        failed: dict[str, list[int]] = {rig.kind: [] for rig in rigs}
        ratios: list[float] = []
        for steps in take_turns(lab, rigs, rate, seconds, rounds, warm_up=3.0):
            this_round: dict[str, float] = {}
            for rig, step in steps:
                failed[rig.kind].append(step.failed)
                if step.passed:
                    cpu[rig.kind].append(step.cpu_ms_per_call)
                    system[rig.kind].append(step.balancer_system_s / max(1, step.created) * 1000)
                    this_round[rig.kind] = step.cpu_ms_per_call
                log(
                    f"  {rig.label:40s} {rate:6.0f} cps: {step.cpu_ms_per_call:.3f} s CPU per "
                    f"1,000 calls, {step.failed} failed of {step.calls}"
                )
            if len(this_round) == 2:
                ratios.append(this_round["sipdispatch"] / this_round["kamailio"])
        medians = {
            kind: statistics.median(values) if values else float("nan")
            for kind, values in cpu.items()
        }
        result["rates"][str(int(rate))] = {
            "cpu_s_per_1000_calls": cpu,
            "median_cpu_s_per_1000_calls": medians,
            # of it, in the kernel: the socket calls, which both balancers make alike
            "median_system_s_per_1000_calls": {
                kind: statistics.median(values) if values else float("nan")
                for kind, values in system.items()
            },
            "failed_calls": failed,
            "round_ratios": ratios,
            "median_ratio": statistics.median(ratios) if ratios else float("nan"),
        }
        log(
            f"  sipdispatch / Kamailio CPU per call at {rate:.0f} cps: median "
            f"{statistics.median(ratios) if ratios else float('nan'):.2f}x "
            f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return result
