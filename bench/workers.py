"""Two sipdispatch workers against one, in the same run (``--workers 2``, SO_REUSEPORT).

The kernel spreads a shared UDP port's datagrams over the workers by a hash of the source:
a sipp caller on one port (``-t u1``) would land every call on one worker. So here the caller
opens a port per call (``-t un``), for both rigs alike, and the figures compare like with
like: the balancer's CPU per call (every process of its group: the supervisor and the
workers) and the calls lost, at the same rates, the rigs taking turns (forwards in one
round, backwards in the next) on fresh processes. Each worker's share of the calls comes
from the leader's ``/metrics`` (``sipdispatch_worker_calls_answered_total``).
"""

from __future__ import annotations

import re
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from ladder import take_turns
from rigs import (
    CAPACITY_ARGS,
    Rig,
    Settings,
    SipdispatchBalancer,
    SipdispatchBuild,
    SipdispatchRig,
    Variant,
)

from sipphelpers import SippLab

#: a port per call: the kernel's hash then spreads the calls over the workers
CALLER_PER_CALL_PORTS = ("-t", "un", "-max_socket", "10000")
ONE = Variant("1 worker", args=CAPACITY_ARGS)
TWO = Variant("2 workers", args=(*CAPACITY_ARGS, "--workers", "2"))


def worker_rig(
    lab: SippLab, out: Path, settings: Settings, build: SipdispatchBuild, *, workers: int, tag: str
) -> SipdispatchRig:
    rig = SipdispatchRig(lab, out, settings, tag, build, variant=TWO if workers > 1 else ONE)
    rig.label = f"sipdispatch ({workers} worker{'s' if workers > 1 else ''}, {build.name})"
    rig.caller_args = CALLER_PER_CALL_PORTS  # type: ignore[attr-defined]
    return rig


def per_worker_messages(rig: SipdispatchRig) -> dict[str, float]:
    balancer = rig._balancer  # the running balancer's control port
    assert isinstance(balancer, SipdispatchBalancer)
    url = f"http://{balancer.ip}:{balancer.control_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        text = page.read().decode()
    name = "sipdispatch_worker_calls_answered_total"
    found = re.findall(rf'^{name}\{{worker="(\d+)"\}} (\S+)$', text, re.MULTILINE)
    return {worker: float(value) for worker, value in found}


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
    """CPU per call and lost calls of one and two workers at each of ``rates``."""
    rigs = [
        worker_rig(lab, out, settings, build, workers=1, tag="w1"),
        worker_rig(lab, out, settings, build, workers=2, tag="w2"),
    ]
    result: dict[str, Any] = {"rates": {}}
    for rate in rates:
        cpu: dict[str, list[float]] = {rig.label: [] for rig in rigs}
        lost: dict[str, int] = {rig.label: 0 for rig in rigs}
        ratios: list[float] = []
        shares: list[dict[str, float]] = []

        def read_shares(rig: Rig) -> None:
            if rig is rigs[1]:
                time.sleep(1.2)  # the followers report every second
                shares.append(per_worker_messages(rig))  # noqa: B023 - this rate's list

        for steps in take_turns(lab, rigs, rate, seconds, rounds, while_up=read_shares):
            this_round: dict[str, float] = {}
            for rig, step in steps:
                lost[rig.label] += step.failed
                cpu[rig.label].append(step.cpu_ms_per_call)
                this_round[rig.label] = step.cpu_ms_per_call
                log(
                    f"  {rig.label:40s} {rate:6.0f} cps: {step.cpu_ms_per_call:.3f} ms CPU/call, "
                    f"{step.failed} failed of {step.calls}"
                    + (f", calls answered per worker {shares[-1]}" if rig is rigs[1] else "")
                )
            if this_round[rigs[0].label] > 0:
                ratios.append(this_round[rigs[1].label] / this_round[rigs[0].label])
        result["rates"][str(int(rate))] = {
            "cpu_ms_per_call": cpu,
            "median_cpu_ms_per_call": {
                label: statistics.median(figures) for label, figures in cpu.items()
            },
            "failed_calls": lost,
            "round_ratios": ratios,
            "median_ratio": statistics.median(ratios) if ratios else float("nan"),
            "messages_per_worker": shares,
        }
        log(
            f"  two workers / one at {rate:.0f} cps: median "
            f"{statistics.median(ratios) if ratios else float('nan'):.2f}x "
            f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return result
