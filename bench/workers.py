"""Two sipdispatch workers against one, in the same run (``--workers 2``, SO_REUSEPORT).

The kernel spreads a shared UDP port's datagrams over the workers by a hash of the source:
a sipp caller on one port (``-t u1``) would land every call on one worker. So here the caller
opens a port per call (``-t un``), for both rigs alike, and the figures compare like with
like: the balancer's CPU per call (every process of its group: the supervisor and the
workers) and the calls lost, at the same rates, the rigs taking turns (forwards in one
round, backwards in the next) on fresh processes. Each worker's share of the calls comes
from the leader's ``/metrics`` (``sipdispatch_worker_calls_answered_total``).

Kamailio with ``children=1`` and ``children=2`` takes its turns in the same rounds, with the
same caller: a second process costs something on any machine whose cores it shares with the
sipp processes (more wake-ups at smaller batches, preemption, caches), and the C balancer's
ratio says how much of ours is that.

One process of each at half the rate takes its turns too: each of two workers serves half the
calls, and a call costs more at a lower rate (a process woken more often per call, at smaller
batches, and on a virtual machine a halted core to wake). Two processes against one at half
the rate is what the second one costs beyond that.
"""

from __future__ import annotations

import re
import statistics
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ladder import take_turns
from report import HALF
from rigs import (
    CAPACITY_ARGS,
    KamailioRig,
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


def kamailio_rigs(lab: SippLab, out: Path, settings: Settings) -> list[Rig]:
    """Kamailio ``children=1``, ``children=2`` and ``children=1`` for half the rate, with the
    same caller: what a second worker process costs on this machine (its cores shared with
    the sipp processes), measured by the C balancer beside ours."""
    rigs: list[Rig] = []
    for children, tag in ((1, "kw1"), (2, "kw2"), (1, "kw1h")):
        rig = KamailioRig(lab, out, settings, tag, children=children)
        rig.caller_args = CALLER_PER_CALL_PORTS  # type: ignore[attr-defined]
        rigs.append(rig)
    rigs[2].label += HALF
    return rigs


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
    kamailio: bool = True,
    kamailio_up_to: float | None = None,
) -> dict[str, Any]:
    """CPU per call and failed calls of one and two workers at each of ``rates`` (a try with
    0.1 % or more of its calls failed counts its failed calls, not its CPU, and a round its
    ratio only when both kept up); with
    ``kamailio``, Kamailio's ``children=1`` and ``children=2`` take their turns too, as the
    control, at the rates up to ``kamailio_up_to`` (its per-core maximum: above it the one
    child fails calls, and a failing step's CPU per call is no figure to compare)."""
    two = worker_rig(lab, out, settings, build, workers=2, tag="w2")
    rigs: list[Rig] = [
        worker_rig(lab, out, settings, build, workers=1, tag="w1"),
        two,
        worker_rig(lab, out, settings, build, workers=1, tag="w1h"),
    ]
    rigs[2].label += HALF
    trio = kamailio_rigs(lab, out, settings) if kamailio else []
    half_rate = {rigs[2]: 0.5, **({trio[2]: 0.5} if trio else {})}
    result: dict[str, Any] = {"rates": {}}
    for rate in rates:
        control = trio if kamailio_up_to is None or rate <= kamailio_up_to else []
        cpu: dict[str, list[float]] = {rig.label: [] for rig in rigs + control}
        lost: dict[str, int] = {rig.label: 0 for rig in rigs + control}
        woken: dict[str, list[float]] = {rig.label: [] for rig in rigs + control}
        # two / one, and two / one at half the rate, of each round both kept up
        ratios: dict[str, list[float]] = {"one": [], "half": []}
        control_ratios: dict[str, list[float]] = {"one": [], "half": []}
        shares: list[dict[str, float]] = []

        def read_shares(rig: Rig) -> None:
            if rig is two:
                time.sleep(1.2)  # the followers report every second
                shares.append(per_worker_messages(two))  # noqa: B023 - this rate's list

        for steps in take_turns(
            lab, rigs + control, rate, seconds, rounds, while_up=read_shares, share=half_rate
        ):
            this_round: dict[str, float] = {}
            for rig, step in steps:
                lost[rig.label] += step.failed
                woken[rig.label].append(step.balancer_wakeups / max(1, step.created))
                if step.passed:  # a failing try's CPU per call is not that of keeping up
                    cpu[rig.label].append(step.cpu_ms_per_call)
                    this_round[rig.label] = step.cpu_ms_per_call
                log(
                    f"  {rig.label:54s} {step.rate:6.0f} cps: {step.cpu_ms_per_call:.3f} ms "
                    f"CPU/call, {woken[rig.label][-1]:.2f} wake-ups/call, {step.failed} failed "
                    f"of {step.calls}"
                    + (f", calls answered per worker {shares[-1]}" if rig is two else "")
                )
            for trio_of, into in ((rigs, ratios), (control, control_ratios)):
                if not trio_of:
                    continue
                one_cpu, two_cpu, half_cpu = (this_round.get(rig.label) for rig in trio_of)
                if one_cpu and two_cpu:  # a round counts when both kept up
                    into["one"].append(two_cpu / one_cpu)
                if half_cpu and two_cpu:
                    into["half"].append(two_cpu / half_cpu)
        result["rates"][str(int(rate))] = {
            **_figures(rigs, cpu, lost, ratios, woken),
            "messages_per_worker": shares,
            **(
                {"kamailio": _figures(control, cpu, lost, control_ratios, woken)} if control else {}
            ),
        }
        log(
            f"  two workers / one at {rate:.0f} cps: {_rounds_text(ratios['one'])}, / one at half "
            f"the rate: {_rounds_text(ratios['half'])}"
            + (
                f"; Kamailio children=2 / children=1: {_rounds_text(control_ratios['one'])}, "
                f"/ children=1 at half the rate: {_rounds_text(control_ratios['half'])}"
                if control
                else ""
            )
        )
    return result


def _rounds_text(ratios: list[float]) -> str:
    return f"median {_median(ratios):.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)})"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _figures(
    trio: Sequence[Rig],
    cpu: dict[str, list[float]],
    lost: dict[str, int],
    ratios: dict[str, list[float]],
    woken: dict[str, list[float]],
) -> dict[str, Any]:
    """One balancer's CPU per call (every try and the median), failed calls, ratios and
    wake-ups per call (the balancer's processes woken from a wait, ``rigs.wakeups``), of one
    process, two, and one at half the rate."""
    labels = [rig.label for rig in trio]
    return {
        "cpu_ms_per_call": {label: cpu[label] for label in labels},
        # of the tries that kept up (< 0.1 % failed calls)
        "median_cpu_ms_per_call": {label: _median(cpu[label]) for label in labels},
        "median_wakeups_per_call": {label: _median(woken[label]) for label in labels},
        "failed_calls": {label: lost[label] for label in labels},
        "round_ratios": ratios["one"],
        "median_ratio": _median(ratios["one"]),
        # two processes at the rate against one at half of it: each one's share of the calls
        "round_ratios_half": ratios["half"],
        "median_ratio_half": _median(ratios["half"]),
    }
