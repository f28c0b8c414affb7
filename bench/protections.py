"""What the default protections cost: CPU per call at one rate, with them on and off, same run.

Two sipdispatch rigs (each its own two gateways), one with the default settings and one
with every protection that can be turned off turned off (``PROTECTIONS_OFF``), take turns at
the same rate: on, off, off, on, on, off... The figure is the median of each one's CPU seconds per
1,000 calls over its passed steps, and their ratio. Taking turns spreads other load on the
machine over both. Message limits stay on in both: they are checked inside the parse and
cannot be turned off, only raised.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ladder import run_step
from rigs import SipdispatchBuild, SipdispatchRig

from sipphelpers import SippLab

#: the flags that turn off each protection that can be off (0: off); a new protection with
#: an off switch belongs here, so that the comparison keeps covering all of them
PROTECTIONS_OFF = [
    *("--source-rate", "0", "--dialog-rate", "0", "--max-transactions", "0"),
    *("--tcp-max-connections", "0", "--tcp-max-per-source", "0"),
    *("--tcp-idle-timeout", "0", "--tcp-message-timeout", "0"),
]


def protections_cost(
    lab: SippLab,
    workdir: Path,
    settings: Any,
    build: SipdispatchBuild | None,
    log: Callable[[str], None],
    *,
    rate: float = 2000,
    step_s: float = 6.0,
    rounds: int = 3,
) -> dict[str, Any]:
    """Steps at ``rate`` through both rigs in turn, ``rounds`` each; CPU per call of each."""
    rigs = {
        "on": SipdispatchRig(lab, workdir, settings, "prot-on", build, label="protections on"),
        "off": SipdispatchRig(
            lab,
            workdir,
            settings,
            "prot-off",
            build,
            extra_args=PROTECTIONS_OFF,
            label="protections off",
        ),
    }
    steps: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    try:
        for rig in rigs.values():
            rig.start()
        for round_number in range(1, rounds + 1):
            # on first in odd rounds, off first in even ones: neither always follows the other
            order = list(rigs.items()) if round_number % 2 else list(rigs.items())[::-1]
            for name, rig in order:
                step = run_step(lab, rig, rate, step_s)
                if not step.passed:
                    rig.restart()
                steps[name].append(step.as_dict() | {"round": round_number})
                log(
                    f"  {rig.label:16s} {rate:6.0f} cps round {round_number}: "
                    f"{step.cpu_ms_per_call:.3f} CPU s per 1,000 calls, "
                    f"{step.failed} failed of {step.created}"
                    + ("" if step.passed else f" ({step.reason})")
                )
    finally:
        for rig in rigs.values():
            rig.stop()
    medians = {
        name: statistics.median(passed)
        if (passed := [s["cpu_s_per_1000_calls"] for s in runs if s["passed"]])
        else None
        for name, runs in steps.items()
    }
    on, off = medians["on"], medians["off"]
    ratio = on / off if on is not None and off else None
    if ratio is not None:
        log(
            f"  protections on/off at {rate:.0f} cps: {on:.3f} / {off:.3f} CPU s per 1,000 "
            f"calls = {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)"
        )
    return {
        "rate": rate,
        "step_s": step_s,
        "off_flags": PROTECTIONS_OFF,
        "cpu_s_per_1000_calls": medians,
        "ratio_on_off": ratio,
        "steps": steps,
    }
