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


def kamailio_pair(lab: SippLab, out: Path, settings: Settings) -> list[Rig]:
    """Kamailio ``children=1`` and ``children=2`` with the same caller: what a second worker
    process costs on this machine (its cores shared with the sipp processes), measured by the
    C balancer beside ours."""
    pair: list[Rig] = []
    for children in (1, 2):
        rig = KamailioRig(lab, out, settings, f"kw{children}", children=children)
        rig.caller_args = CALLER_PER_CALL_PORTS  # type: ignore[attr-defined]
        pair.append(rig)
    return pair


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
    rigs = [
        worker_rig(lab, out, settings, build, workers=1, tag="w1"),
        worker_rig(lab, out, settings, build, workers=2, tag="w2"),
    ]
    pair = kamailio_pair(lab, out, settings) if kamailio else []
    result: dict[str, Any] = {"rates": {}}
    for rate in rates:
        control = pair if kamailio_up_to is None or rate <= kamailio_up_to else []
        cpu: dict[str, list[float]] = {rig.label: [] for rig in rigs + control}
        lost: dict[str, int] = {rig.label: 0 for rig in rigs + control}
        woken: dict[str, list[float]] = {rig.label: [] for rig in rigs + control}
        ratios: list[float] = []
        control_ratios: list[float] = []
        shares: list[dict[str, float]] = []

        def read_shares(rig: Rig) -> None:
            if rig is rigs[1]:
                time.sleep(1.2)  # the followers report every second
                shares.append(per_worker_messages(rig))  # noqa: B023 - this rate's list

        for steps in take_turns(lab, rigs + control, rate, seconds, rounds, while_up=read_shares):
            this_round: dict[str, float] = {}
            for rig, step in steps:
                lost[rig.label] += step.failed
                woken[rig.label].append(step.balancer_wakeups / max(1, step.created))
                if step.passed:  # a failing try's CPU per call is not that of keeping up
                    cpu[rig.label].append(step.cpu_ms_per_call)
                    this_round[rig.label] = step.cpu_ms_per_call
                log(
                    f"  {rig.label:40s} {rate:6.0f} cps: {step.cpu_ms_per_call:.3f} ms CPU/call, "
                    f"{woken[rig.label][-1]:.2f} wake-ups/call, {step.failed} failed of "
                    f"{step.calls}"
                    + (f", calls answered per worker {shares[-1]}" if rig is rigs[1] else "")
                )
            for one_two, into in ((rigs, ratios), (control, control_ratios)):
                if not one_two:
                    continue
                one, two = (this_round.get(rig.label) for rig in one_two)
                if one and two:  # a round counts when both kept up
                    into.append(two / one)
        result["rates"][str(int(rate))] = {
            **_pair_figures(rigs, cpu, lost, ratios, woken),
            "messages_per_worker": shares,
            **(
                {"kamailio": _pair_figures(control, cpu, lost, control_ratios, woken)}
                if control
                else {}
            ),
        }
        log(
            f"  two workers / one at {rate:.0f} cps: median {_median(ratios):.2f}x "
            f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})"
            + (
                f"; Kamailio children=2 / children=1: median {_median(control_ratios):.2f}x "
                f"(rounds {', '.join(f'{r:.2f}' for r in control_ratios)})"
                if control
                else ""
            )
        )
    return result


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pair_figures(
    pair: Sequence[Rig],
    cpu: dict[str, list[float]],
    lost: dict[str, int],
    ratios: list[float],
    woken: dict[str, list[float]],
) -> dict[str, Any]:
    """One pair's CPU per call (every try and the median), failed calls, ratios and wake-ups
    per call (the balancer's processes woken from a wait, ``rigs.wakeups``)."""
    labels = [rig.label for rig in pair]
    return {
        "cpu_ms_per_call": {label: cpu[label] for label in labels},
        # of the tries that kept up (< 0.1 % failed calls)
        "median_cpu_ms_per_call": {label: _median(cpu[label]) for label in labels},
        "median_wakeups_per_call": {label: _median(woken[label]) for label in labels},
        "failed_calls": {label: lost[label] for label in labels},
        "round_ratios": ratios,
        "median_ratio": _median(ratios),
    }
