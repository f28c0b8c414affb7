"""The ratio table, ``docs/benchmarks.md`` and its plots, from a run's ``results.json``.

``bench/run`` calls it at the end; to write the document again from saved results:

    .venv/bin/python bench/report.py bench/results/<run>/results.json [--docs]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DOCS = REPO_ROOT / "docs"

SD = "sipdispatch"
KAM = "kamailio"
#: the label's end of a rig run at half the rate of the others (``bench/workers.py``)
HALF = " at half the rate"
LOADED = 0.5  # load average above which the machine was not quiet when the run started


# --------------------------------------------------------------------------------------------
# figures out of the results


def longest_pause(gc_delta: dict[str, Any]) -> str:
    """The longest collector pause; bench/gcprobe.py lists pauses of 1 ms or more only."""
    if not gc_delta.get("longest"):
        return "under 1 ms"
    return f"{gc_delta['pause_max_ms']:.1f} ms"


def _steps(results: dict[str, Any], section: str, kind: str) -> list[dict[str, Any]]:
    for steps in results.get(section, {}).values():
        if steps and steps[0]["balancer"] == kind:
            return list(steps)
    return []


def _label(results: dict[str, Any], section: str, kind: str) -> str:
    steps = _steps(results, section, kind)
    return steps[0]["label"] if steps else kind


def common_rate_steps(results: dict[str, Any]) -> tuple[float, dict[str, dict[str, Any]]]:
    """The highest rate both balancers passed in the per-core ladder, and those steps."""
    sd = {s["rate"]: s for s in _steps(results, "ladder_per_core", SD) if s["passed"]}
    kam = {s["rate"]: s for s in _steps(results, "ladder_per_core", KAM) if s["passed"]}
    common = sorted(set(sd) & set(kam))
    if not common:
        return 0.0, {}
    rate = common[-1]
    return rate, {SD: sd[rate], KAM: kam[rate]}


def half_latency(results: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The half-capacity run; of repeated ones, the run with the median INVITE->200 p99 (one
    stall of the machine in a few seconds' window moves a p99 by milliseconds)."""
    halves = [e for e in results.get("latency", {}).get(kind, []) if e.get("fraction") == 0.5]
    if not halves:
        return None
    halves.sort(key=lambda e: e["latency"].get("answer_p99_ms", math.inf))
    middle: dict[str, Any] = halves[(len(halves) - 1) // 2]
    return middle


def directs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs straight from the caller to a gateway, by rate (older results held one)."""
    direct = results.get("latency_direct") or []
    return [direct] if isinstance(direct, dict) else sorted(direct, key=lambda d: d["rate"])


def direct_at(results: dict[str, Any], rate: float) -> dict[str, Any] | None:
    """The run straight to a gateway at ``rate``, if there was one."""
    return next((d for d in directs(results) if d["rate"] == rate), None)


def _placement(results: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The cores given to the balancers and to the harness (``--balancer-cpus``,
    ``--harness-cpus``); both empty when they were not set apart."""
    placement = results.get("placement") or {}
    return list(placement.get("balancer") or []), list(placement.get("harness") or [])


def _placement_row(results: dict[str, Any]) -> str:
    balancer, harness = _placement(results)
    if not balancer:
        return "shared: the balancer and the sipp processes wherever the kernel puts them"
    return (
        f"the balancers on CPU {', '.join(map(str, balancer))} (one process on the first), "
        f"sipp and the bench on CPU {', '.join(map(str, harness))}"
    )


def placement_text(results: dict[str, Any]) -> str:
    """What the harness shared with the balancers, for the "what limits" section."""
    balancer, _ = _placement(results)
    if balancer:
        return (
            "The balancers ran on cores of their own (`--balancer-cpus`): the sipp processes "
            "took no time from them, and the balancer's rate did not make its cores busier "
            "with harness work."
        )
    return (
        "Every figure here shares the cores with sipp: the higher a balancer's rate, the "
        "busier the cores it is measured on, with harness work as well as its own. The "
        "INVITE->200 p99 at half capacity is measured at each one's own half capacity: "
        "sipdispatch's at a higher rate than Kamailio's, where the caller and gateways have "
        "more to do too (the floor rows show it), on the same cores. "
        "`bench/run --balancer-cpus 2,3 --harness-cpus 0,1` sets them apart on a machine with "
        "4 or more cores."
    )


def _median_of(results: dict[str, Any]) -> str:
    """How many half-capacity runs the figure is the median of, when there were several."""
    runs = min(
        sum(e.get("fraction") == 0.5 for e in results.get("latency", {}).get(kind, []))
        for kind in (SD, KAM)
    )
    return f"; run with the median 200 p99 of {runs}" if runs > 1 else ""


def first_fail(results: dict[str, Any], section: str, kind: str) -> dict[str, Any] | None:
    failed = [
        s for s in _steps(results, section, kind) if not s["passed"] and not s.get("superseded")
    ]
    return min(failed, key=lambda s: s["rate"]) if failed else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    if isinstance(b, float) and math.isnan(b):
        return None
    return a / b


def _fmt(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def where_time_goes(results: dict[str, Any]) -> list[str]:
    """The profile summary: the kernel's share of each balancer's CPU per call, the core
    alone, and the compiled core's costliest functions, all from this run."""
    out: list[str] = []
    rates = results.get("cpu_at_rates", {}).get("rates", {})
    profile = results.get("core_profile")
    waking = waking_from_idle(results)
    if not rates and not profile and not waking:
        return out
    out.append("## Where the time goes\n")
    lines: list[str] = []
    for rate, figure in rates.items():
        total = figure["median_cpu_s_per_1000_calls"]
        system = figure.get("median_system_s_per_1000_calls", {})
        shares = []
        for kind in (SD, KAM):
            t, k = total.get(kind), system.get(kind)
            if t is None or k is None or math.isnan(t) or math.isnan(k):
                continue
            shares.append(f"{kind} {t:.3f} ms ({t - k:.3f} in its own code, {k:.3f} in the kernel)")
        if shares:
            lines.append(
                f"- **At {int(rate):,} calls/s**, CPU per call: " + "; ".join(shares) + "."
            )
    ccn = results.get("core_calls_native", {}).get("us_per_call")
    if ccn:
        lines.append(
            f"- **The compiled core alone** (`bench/core_calls.py`: parsing, checking, "
            f"transactions, routing and writing the 13 datagrams of a call, no sockets): "
            f"{ccn:.0f} µs per call. What the proxy's own code spends beyond it is the event "
            "loop and the socket calls' Python side, the timers, the probes and the metrics."
        )
    if lines:
        out.append(
            "The kernel's share (system time: the socket calls, the same for both "
            "balancers) against the balancer's own code (user time):\n"
        )
        out.append("\n".join(lines) + "\n")
    if waking:
        out.append(waking + "\n")
    if profile:
        out.append(
            f"The compiled core, instruction counts per call (`bench/coreprofile.py`: callgrind "
            f"on `bench/core_calls.py`, {profile['calls'][1]:,} calls less "
            f"{profile['calls'][0]:,}, so the start-up cancels out): "
            f"{profile['total_k_per_call']:,.0f} thousand per call in all, the harness's own "
            "parsing of three messages per call included. The costliest functions, inclusive "
            "(they nest, so the rows do not add up):\n"
        )
        rows = [
            [f"`{f['function']}`", f"{f['k_instructions_per_call']:,.0f}"]
            for f in profile["functions"]
        ]
        out.append(_table(["function", "thousand instructions per call"], rows))
    return out


def waking_from_idle(results: dict[str, Any]) -> str:
    """The paragraph on what waking from idle costs (``bench/wakeups.py``), or ""."""
    figure = results.get("waking_from_idle")
    if not figure:
        return ""
    cpu = figure["median_cpu_ms_per_call"]
    woken = figure["median_wakeups_per_call"]
    parts = []
    for kind in (SD, KAM):
        idle, awake = cpu["idle"].get(kind), cpu["awake"].get(kind)
        if idle is None or awake is None or math.isnan(idle) or math.isnan(awake):
            return ""
        parts.append(
            f"{kind} {idle:.3f} -> {awake:.3f} ms ({awake / idle - 1:+.0%}; "
            f"{woken['idle'][kind]:.2f} wake-ups per call)"
        )
    ratio = figure["sd_over_kam"]
    return (
        f"**Waking from idle** (`bench/wakeups.py`, {figure['rate']:,.0f} calls/s, median of "
        f"{figure['rounds']} tries each on fresh processes): CPU per call with the cores left "
        "to go idle between messages, as in every other phase, against the same with a "
        "lowest-priority (`SCHED_IDLE`) busy loop on every core that keeps them from halting "
        "and takes no time from anyone else: "
        + "; ".join(parts)
        + f". sipdispatch / Kamailio: {ratio['idle']:.2f}x with the cores idle, "
        f"{ratio['awake']:.2f}x with them awake. A wake-up is the balancer's processes "
        "woken from a wait; each one pays for the core coming back from a halt, which on "
        "a virtual machine is charged to the process woken. A balancer woken more often per "
        "call pays it more often: at lower rates, and with two workers (each woken for its "
        "half of the calls)."
    )


def _wakeups_1_2(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """Wake-ups per call of one and two processes, from two pairs' figures, written as
    ``; wake-ups per call 1 -> 2: sd a -> b, kam c -> d`` (empty when a figure is missing)."""
    shown = []
    for name, pair in (("sd", ours), ("kam", theirs)):
        one_two = list(pair.get("median_wakeups_per_call", {}).values())
        if len(one_two) != 2 or any(math.isnan(v) for v in one_two):
            return ""
        shown.append(f"{name} {one_two[0]:.2f} -> {one_two[1]:.2f}")
    return "; wake-ups per call 1 -> 2: " + ", ".join(shown)


def verdict_le(ratio: float | None, bar: float) -> str:
    if ratio is None or math.isnan(ratio):
        return "not measured"
    return "met" if ratio <= bar else f"missed by {ratio / bar - 1:.1%}"


def ratio_rows(results: dict[str, Any]) -> list[list[str]]:  # noqa: PLR0915
    """[figure, sipdispatch, Kamailio, ratio, target, verdict] rows."""
    rows: list[list[str]] = []
    maxima = results.get("max_per_core", {})
    sd_max, kam_max = maxima.get(SD), maxima.get(KAM)

    def verdict_ge(ratio: float | None, bar: float, goal: float | None = None) -> str:
        if ratio is None:
            return "not measured"
        if ratio >= (goal or bar):
            return "met" + (" (goal)" if goal else "")
        if ratio >= bar:
            return f"first bar met; goal missed by {(goal or bar) / ratio - 1:.0%}"
        return f"missed: {ratio:.2f}x of the {bar}x bar ({bar / ratio - 1:.0%} short)"

    r = _ratio(sd_max, kam_max)
    rows.append(
        [
            "calls/s per core, < 0.1 % failed",
            _fmt(sd_max, 0),
            _fmt(kam_max, 0),
            _fmt(r, 2, "x"),
            ">= 0.5x (goal 1.25x)",
            verdict_ge(r, 0.5, 1.25),
        ]
    )
    py_steps = results.get("ladder_python_build", [])
    if py_steps:
        py_max = results.get("max_python_build")
        r = _ratio(py_max, kam_max)
        rows.append(
            [
                "  the same, pure Python build",
                _fmt(py_max, 0),
                _fmt(kam_max, 0),
                _fmt(r, 2, "x"),
                ">= 0.5x (goal 1x)",
                verdict_ge(r, 0.5, 1.0),
            ]
        )
    all_max = results.get("max_all_cores", {})
    labels = results.get("all_cores_labels", {})
    if all_max:
        r = _ratio(all_max.get(SD), all_max.get(KAM))
        rows.append(
            [
                f"calls/s all {results.get('machine', {}).get('nproc', '?')} cores "
                f"({labels.get(SD, SD)}; {labels.get(KAM, KAM)})",
                _fmt(all_max.get(SD), 0),
                _fmt(all_max.get(KAM), 0),
                _fmt(r, 2, "x"),
                "(reported)",
                "measured" if r is not None else "not measured",
            ]
        )
    for rate, figure in results.get("workers", {}).get("rates", {}).items():
        one_label, two_label, half_label = _process_labels(figure)
        one, two = (figure["median_cpu_ms_per_call"].get(k) for k in (one_label, two_label))
        lost_one, lost_two = (figure["failed_calls"].get(k, 0) for k in (one_label, two_label))
        rows.append(
            [
                f"CPU ms/call at {rate} cps: 2 workers (sd column) / 1 worker (kam column); "
                f"failed calls {lost_two} (1 worker: {lost_one}; "
                f"rounds both kept up: {len(figure.get('round_ratios', []))})",
                _fmt(two, 3),
                _fmt(one, 3),
                _fmt(figure.get("median_ratio"), 2, "x"),
                "<= 1.1x, 0 lost",
                _workers_verdict(figure.get("median_ratio"), lost_one, lost_two),
            ]
        )
        control = figure.get("kamailio")
        if control:
            k_lost = sum(control["failed_calls"].values())
            ours, theirs = figure.get("median_ratio"), control.get("median_ratio")
            rows.append(
                [
                    f"a second process at {rate} cps, CPU per call 2 / 1 (sd: --workers 2 / 1; "
                    f"kam: children=2 / 1, same caller; failed calls {k_lost}"
                    f"{_wakeups_1_2(figure, control)})",
                    _fmt(ours, 2, "x"),
                    _fmt(theirs, 2, "x"),
                    _fmt(_ratio(ours, theirs), 2, "x"),
                    "(the machine's share)",
                    "measured" if theirs is not None and not math.isnan(theirs) else "",
                ]
            )
        if half_label:
            ours = figure.get("median_ratio_half")
            theirs = (control or {}).get("median_ratio_half")
            rows.append(
                [
                    f"2 processes at {rate} cps / 1 at half the rate (each one's share of the "
                    "calls), CPU per call",
                    _fmt(ours, 2, "x"),
                    _fmt(theirs, 2, "x"),
                    _fmt(_ratio(ours, theirs), 2, "x"),
                    "(the rate each serves)",
                    "measured" if ours is not None and not math.isnan(ours) else "",
                ]
            )
    rate, steps = common_rate_steps(results)
    if steps:
        a = steps[SD]["cpu_s_per_1000_calls"]
        b = steps[KAM]["cpu_s_per_1000_calls"]
        r = _ratio(a, b)
        rows.append(
            [
                f"CPU s per 1,000 calls at {rate:,.0f} calls/s",
                _fmt(a, 3),
                _fmt(b, 3),
                _fmt(r, 2, "x"),
                "(lower is better)",
                "" if r is None else ("cheaper" if r <= 1 else f"{r:.1f}x Kamailio's CPU"),
            ]
        )
    at_rates = results.get("cpu_at_rates", {})
    named = at_rates.get("named_rates", [2000.0, 3000.0])
    for rate, figure in at_rates.get("rates", {}).items():
        medians = figure["median_cpu_s_per_1000_calls"]
        failed = figure["failed_calls"]
        r = figure.get("median_ratio")
        tries = at_rates.get("rounds", 0)
        lost = sum(failed.get(SD, [])), sum(failed.get(KAM, []))
        held = (
            ""
            if float(rate) in named
            else ", a rate both hold: the lower per-core maximum is under "
            f"{max(named):,.0f} on this machine"
        )
        rows.append(
            [
                f"CPU s per 1,000 calls at {int(rate):,} calls/s (median of {tries} tries on "
                f"fresh processes; failed calls {lost[0]} / {lost[1]}{held})",
                _fmt(medians.get(SD), 3),
                _fmt(medians.get(KAM), 3),
                _fmt(r, 2, "x"),
                "<= 0.8x",
                verdict_le(r, 0.8),
            ]
        )
    py_rate = results.get("python_build_cpu_rate")
    if py_rate:

        def passed_at(steps_: list[dict[str, Any]]) -> dict[str, Any] | None:
            return next((st for st in steps_ if st["rate"] == py_rate and st["passed"]), None)

        nat = passed_at(_steps(results, "ladder_per_core", SD))
        kam = passed_at(_steps(results, "ladder_per_core", KAM))
        py = passed_at(py_steps)
        b = kam["cpu_s_per_1000_calls"] if kam else None
        for name, st in (
            (f"CPU s per 1,000 calls at {py_rate:,.0f} calls/s", nat),
            ("  the same, pure Python build", py),
        ):
            if st is None or (name.startswith("CPU") and py_rate == rate):
                continue
            a = st["cpu_s_per_1000_calls"]
            r = _ratio(a, b)
            rows.append(
                [
                    name,
                    _fmt(a, 3),
                    _fmt(b, 3),
                    _fmt(r, 2, "x"),
                    "(lower is better)",
                    "" if r is None else ("cheaper" if r <= 1 else f"{r:.1f}x Kamailio's CPU"),
                ]
            )
    sd_lat, kam_lat = half_latency(results, SD), half_latency(results, KAM)
    for name, key, bar in (("INVITE->100", "trying", 2.0), ("INVITE->200", "answer", 1.0)):
        bar_text = f"<= {bar:g}x"
        for q in ("p50", "p99"):
            a = sd_lat["latency"].get(f"{key}_{q}_ms") if sd_lat else None
            b = kam_lat["latency"].get(f"{key}_{q}_ms") if kam_lat else None
            r = _ratio(a, b)
            rows.append(
                [
                    f"{name} {q} at half capacity (ms{_median_of(results)})",
                    _fmt(a, 2),
                    _fmt(b, 2),
                    _fmt(r, 2, "x"),
                    bar_text if q == "p99" else "",
                    verdict_le(r, bar) if q == "p99" else "",
                ]
            )
    if sd_lat and kam_lat:
        sd_floor, kam_floor = (direct_at(results, entry["rate"]) for entry in (sd_lat, kam_lat))
        if sd_floor and kam_floor:
            a, b = (f["latency"].get("answer_p99_ms") for f in (sd_floor, kam_floor))
            rows.append(
                [
                    "INVITE->200 p99 with no balancer, at each one's half-capacity rate (ms;"
                    " the harness's own floor there)",
                    _fmt(a, 2),
                    _fmt(b, 2),
                    _fmt(_ratio(a, b), 2, "x"),
                    "",
                    "",
                ]
            )
    same = results.get("latency_same_rate", {})
    if same.get(SD) and same.get(KAM):
        rate = same[SD]["rate"]
        for name, key in (("INVITE->100", "trying"), ("INVITE->200", "answer")):
            a = same[SD]["latency"].get(f"{key}_p99_ms")
            b = same[KAM]["latency"].get(f"{key}_p99_ms")
            r = _ratio(a, b)
            rows.append(
                [
                    f"{name} p99 at the same {rate:,.0f} calls/s (ms)",
                    _fmt(a, 2),
                    _fmt(b, 2),
                    _fmt(r, 2, "x"),
                    "<= 2x",
                    verdict_le(r, 2.0),
                ]
            )
    fo = results.get("failover", {})
    if fo:
        s, k = fo.get(SD, {}), fo.get(KAM, {})
        rows.append(
            [
                "gateway killed at 50 calls/s: failed calls",
                _fmt(s.get("failed")),
                _fmt(k.get("failed")),
                _fmt(_ratio(s.get("failed"), k.get("failed")), 2, "x"),
                "<= Kamailio",
                ""
                if not k
                else ("met" if s.get("failed", 1e9) <= k.get("failed", -1) else "missed"),
            ]
        )
        rows.append(
            [
                "  of them new INVITEs (not cut off)",
                _fmt(s.get("failed_new")),
                _fmt(k.get("failed_new")),
                "",
                "0",
                "met" if s.get("failed_new") == 0 else f"missed ({s.get('failed_new')})",
            ]
        )
        rows.append(
            [
                "  time to detect (s)",
                _fmt(s.get("detect_s"), 2),
                _fmt(k.get("detect_s"), 2),
                _fmt(_ratio(s.get("detect_s"), k.get("detect_s")), 2, "x"),
                "",
                "",
            ]
        )
        rows.append(
            [
                "  time to recover (s)",
                _fmt(s.get("recover_s"), 2) if s.get("recover_s") is not None else "never",
                _fmt(k.get("recover_s"), 2) if k.get("recover_s") is not None else "never",
                _fmt(_ratio(s.get("recover_s"), k.get("recover_s")), 2, "x"),
                "",
                "",
            ]
        )
    mem = results.get("memory_after_ladder", {})
    if mem:
        a, b = mem.get(SD, {}).get("pss_mib"), mem.get(KAM, {}).get("pss_mib")
        rows.append(
            [
                "memory after the highest passed ladder step, PSS (MiB)",
                _fmt(a, 1),
                _fmt(b, 1),
                _fmt(_ratio(a, b), 2, "x"),
                "",
                "",
            ]
        )
    dlg = results.get("memory_dialogs", {})
    if dlg:
        a = dlg.get(SD, {}).get("pss_per_10k_mib")
        b = dlg.get(KAM, {}).get("pss_per_10k_mib")
        rows.append(
            [
                "PSS per 10,000 calls in progress (MiB)",
                _fmt(a, 1),
                _fmt(b, 1),
                _fmt(_ratio(a, b), 2, "x"),
                "flat",
                "",
            ]
        )
    return rows


def sd_only_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    prop = results.get("propagation", {})
    p99 = prop.get("every_replica_p99_s")
    rows.append(
        [
            "endpoint change -> every replica",
            prop.get("status", "not measured yet"),
            "< 1 s (p99)"
            + ("" if p99 is None else (": met" if p99 < 1.0 else f": missed by {p99 - 1:.2f} s")),
        ]
    )
    costs = results.get("feature_costs") or {}
    plain = costs.get("rows", [{}])[0].get("cpu_s_per_1000_calls")
    for row in costs.get("rows", [])[1:]:
        cpu = row["cpu_s_per_1000_calls"]
        # each round's ratio against the plain proxy of the same round, as a cost
        rounds = [1 / r - 1 if row.get("turns_off") else r - 1 for r in row.get("round_ratios", [])]
        spread = f"; round by round {min(rounds):+.1%} to {max(rounds):+.1%}" if rounds else ""
        if row.get("control"):  # the plain proxy against itself: the noise floor
            rows.append(
                [
                    f"CPU per call of the plain proxy against itself at {costs['rate']:,} calls/s",
                    f"{cpu / plain - 1:+.1%}{spread}",
                    "the noise: differences this small are not resolved",
                ]
            )
            continue
        if row.get("turns_off"):  # the features the plain proxy has on, against them off
            what, change = f"the default protections (against {row['name']})", plain / cpu - 1
        else:
            what, change = row["name"], cpu / plain - 1
        rows.append(
            [
                f"CPU per call of {what} at {costs['rate']:,} calls/s",
                f"{change:+.1%} ({plain:.3f} s per 1,000 calls plain, {cpu:.3f} {row['name']}"
                f"{spread})",
                "within 5 %" + (": met" if change <= 0.05 else ": missed"),
            ]
        )
    for p in results.get("probing", []):
        rows.append(  # noqa: PERF401
            [
                f"probing {p['destinations']:,} destinations every {p['interval_s']:g} s",
                f"{p['core_share']:.1%} of a core ({p['us_per_probe']:.0f} µs per probe), "
                f"{p['up']} up",
                (
                    "10,000 every 5 s on one core: "
                    + ("met" if p["core_share"] < 1.0 else "missed")
                    + (
                        f"; calls meanwhile: INVITE->200 p99 "
                        f"{p['calls']['answer_p99_ms']:.2f} ms, {p['calls']['failed']} failed"
                        if p.get("calls")
                        else ""
                    )
                )
                if p["destinations"] == 10000
                else "",
            ]
        )
    for row in results.get("remap", []):
        if row["n"] in (4, 16):
            rows.append(  # noqa: PERF401
                [
                    f"keys remapped adding 1 destination to {row['n']}",
                    f"{row['rendezvous']:.3f} (hash % n: {row['modulo']:.3f}, ideal "
                    f"{row['ideal']:.3f})",
                    f"<= 1.2/N = {row['bound']:.3f}: "
                    + ("met" if row["rendezvous"] <= row["bound"] else "missed"),
                ]
            )
    return rows


def _workers_verdict(ratio: float | None, lost_one: int, lost_two: int) -> str:
    """Calls failed by one worker too say the rate is past what this machine carries with
    the caller's port per call (overload, not calls lost between workers)."""
    if lost_one:
        return f"overloaded: {lost_one} failed with 1 worker, {lost_two} with 2"
    if lost_two:
        return f"{lost_two} lost"
    return verdict_le(ratio, 1.1)


def _process_labels(figure: dict[str, Any]) -> tuple[str, str, str | None]:
    """The one-process, two-process and (in runs that had it) half-rate labels of a
    ``bench/workers.py`` figure, sipdispatch's (workers) or Kamailio's (children)."""
    labels = sorted(figure["median_cpu_ms_per_call"])
    half = next((label for label in labels if HALF in label), None)
    rest = [label for label in labels if label != half]
    one = next(label for label in rest if "(1 worker" in label or "children=1)" in label)
    two = next(label for label in rest if "(2 workers" in label or "children=2)" in label)
    return one, two, half


def _workers_limit_text(results: dict[str, Any]) -> str | None:
    """What the two-workers ratio is made of: the rate each worker serves, from the rigs at
    half the rate (runs that had them)."""
    said = []
    for rate, figure in results.get("workers", {}).get("rates", {}).items():
        one, _, half = _process_labels(figure)
        if half is None:
            continue
        medians = figure["median_cpu_ms_per_call"]
        text = (
            f"at {int(rate):,} calls/s one worker costs {medians[one]:.3f} ms per call, one at "
            f"half that rate {medians[half]:.3f} ({_fmt(_ratio(medians[half], medians[one]), 2)}"
            f"x), two workers {figure['median_ratio']:.2f}x one and "
            f"{figure['median_ratio_half']:.2f}x one at half the rate"
        )
        control = figure.get("kamailio")
        if control:
            k_medians = control["median_cpu_ms_per_call"]
            k_one, _, k_half = _process_labels(control)
            text += (
                f" (Kamailio: children=1 at half the rate "
                f"{_fmt(_ratio(k_medians[k_half], k_medians[k_one]), 2)}x its figure, children=2 "
                f"{control['median_ratio']:.2f}x children=1 and "
                f"{control['median_ratio_half']:.2f}x children=1 at half the rate)"
            )
        said.append(text)
    if not said:
        return None
    return (
        "- **Two workers against one**: each of two workers serves half the calls, and a call "
        "costs more at a lower rate (a process woken more often per call, at smaller batches, "
        "and on a virtual machine a halted core to wake, see waking from idle): "
        + "; ".join(said)
        + ". Two workers against one at half the rate is what sharing the port and the "
        "cores adds to that."
    )


def ratio_table_text(results: dict[str, Any]) -> str:
    head = ["figure", "sipdispatch", "Kamailio", "sd/kam", "target", "verdict"]
    rows = [head, *ratio_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    extra = sd_only_rows(results)
    if extra:
        lines.append("")
        lines.append("sipdispatch only:")
        lines.extend(f"  {r[0]}: {r[1]}" + (f"  [target {r[2]}]" if r[2] else "") for r in extra)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# plots


def plots(results: dict[str, Any], img_dir: Path, prefix: str = "bench-") -> list[Path]:  # noqa: PLR0915
    try:
        import matplotlib  # noqa: PLC0415 - optional: no plots without it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("report: matplotlib not installed, no plots", file=sys.stderr)
        return []
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colors = {SD: "tab:blue", KAM: "tab:red"}

    # calls/s vs failed calls
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for section, style in (("ladder_per_core", "-o"), ("ladder_all_cores", "--s")):
        for kind in (SD, KAM):
            steps = sorted(
                (s for s in _steps(results, section, kind) if not s.get("superseded")),
                key=lambda s: s["rate"],
            )
            if not steps:
                continue
            xs = [s["rate"] for s in steps]
            ys = [max(s["failed_fraction"] * 100, 1e-3) for s in steps]
            suffix = ", all cores" if section == "ladder_all_cores" else ", per core"
            ax.plot(xs, ys, style, color=colors[kind], label=steps[0]["label"] + suffix, ms=4)
    ax.axhline(0.1, color="grey", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[0], 0.12, " 0.1 % limit", color="grey", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("offered calls/s")
    ax.set_ylabel("failed calls, % (0 shown as 0.001)")
    ax.set_title("Calls per second vs failed calls")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = img_dir / f"{prefix}cps-failures.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # latency vs rate
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), sharey=False)
    for ax, key, title in (
        (axes[0], "trying", "INVITE -> 100"),
        (axes[1], "answer", "INVITE -> 200"),
    ):
        for kind in (SD, KAM):
            entries = list(results.get("latency", {}).get(kind, []))
            extra = results.get("latency_same_rate", {}).get(kind)
            if extra and all(e["rate"] != extra["rate"] for e in entries):
                entries.append(extra)
            entries.sort(key=lambda e: e["rate"])
            if not entries:
                continue
            xs = [e["rate"] for e in entries]
            for q, style in (("p50", "-o"), ("p99", "--^")):
                ys = [e["latency"].get(f"{key}_{q}_ms", float("nan")) for e in entries]
                ax.plot(xs, ys, style, color=colors[kind], ms=4, label=f"{kind} {q}")
        floor = directs(results)
        if floor and key == "answer":
            ax.plot(
                [d["rate"] for d in floor],
                [d["latency"]["answer_p99_ms"] for d in floor],
                "kx",
                label="no balancer p99",
            )
        ax.set_xlabel("calls/s")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = img_dir / f"{prefix}latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # CPU per 1000 calls vs rate
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for kind in (SD, KAM):
        steps = sorted(
            (s for s in _steps(results, "ladder_per_core", kind) if s["passed"]),
            key=lambda s: s["rate"],
        )
        if steps:
            ax.plot(
                [s["rate"] for s in steps],
                [s["cpu_s_per_1000_calls"] for s in steps],
                "-o",
                color=colors[kind],
                ms=4,
                label=steps[0]["label"],
            )
    py = sorted(
        (st for st in results.get("ladder_python_build", []) if st["passed"]),
        key=lambda st: st["rate"],
    )
    if py:
        ax.plot(
            [st["rate"] for st in py],
            [st["cpu_s_per_1000_calls"] for st in py],
            "--o",
            color="tab:cyan",
            ms=4,
            label=py[0]["label"],
        )
    ax.set_xlabel("calls/s (passing steps)")
    ax.set_ylabel("balancer CPU seconds per 1,000 calls")
    ax.set_title("CPU cost per call")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = img_dir / f"{prefix}cpu.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# the document


def _cpu_drift(results: dict[str, Any], kind: str) -> list[tuple[float, float, float, float]]:
    """(rate, CPU per 1,000 calls in the latency phase, in the ladder at the nearest rate at or
    below it, that rate) for ``kind``'s latency steps that cost 20 % more than the ladder's. At
    or below: a call costs more at a lower rate (fewer messages per wake-up), so a latency
    step is only compared with a ladder step that had no such advantage."""
    latency = [e for e in results.get("latency", {}).get(kind, []) if not e["failed"]]
    ladder = [s for s in _steps(results, "ladder_per_core", kind) if s["passed"]]
    out = []
    for e in latency:
        below = [s for s in ladder if e["rate"] * 0.75 <= s["rate"] <= e["rate"]]
        if not below:
            continue
        near = max(below, key=lambda s: s["rate"])
        a, b = e["cpu_s_per_1000_calls"], near["cpu_s_per_1000_calls"]
        if a > 1.2 * b:
            out.append((e["rate"], a, b, near["rate"]))
    return out


def _steps_with_other_load(results: dict[str, Any], limit: float) -> list[tuple[str, float]]:
    """(step, other load in cores) of every measured step where other processes were busy."""
    found: list[tuple[str, float]] = []

    def visit(step: dict[str, Any], what: str) -> None:
        other = step.get("other_cores", 0.0)
        if other >= limit:
            found.append((f"{step['label']} {what} at {step['rate']:,.0f} calls/s", other))

    for section in ("ladder_per_core", "ladder_all_cores"):
        for steps in results.get(section, {}).values():
            for st in steps:
                visit(st, "ladder")
    for st in results.get("ladder_python_build", []):
        visit(st, "ladder")
    for entries in results.get("latency", {}).values():
        for e in entries:
            visit(e, "latency")
    for mode in ("watched", "off"):
        entry = results.get("gc", {}).get(mode)
        if entry:
            visit(entry["step"], f"GC {mode}")
    return found


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out.extend("| " + " | ".join(str(c) for c in r) + " |" for r in rows)
    return "\n".join(out)


def _limit_text(results: dict[str, Any], section: str, kind: str) -> str:
    fail = first_fail(results, section, kind)
    steps = _steps(results, section, kind)
    if not steps:
        return "not measured"
    if fail is None:
        return "no step failed within the time budget: the maximum is higher than measured"
    return f"first failure at {fail['rate']:,.0f} calls/s: {fail['reason']}; {fail['limit']}"


def markdown(results: dict[str, Any], img_rel: str, prefix: str = "bench-") -> str:  # noqa: PLR0915
    m = results.get("machine", {})
    prop = results.get("propagation", {})
    load = m.get("load_at_start", [0, 0, 0])
    mode = results.get("mode", "full")
    parts: list[str] = []
    parts.append("# Benchmarks: sipdispatch vs Kamailio's dispatcher\n")
    parts.append(
        "Written by `bench/run` (`bench/report.py`) from the run of "
        f"{m.get('date', '?')}; every figure below comes from that run. The targets in the "
        "ratio table are the design's (section 5 of the design document), and where they are "
        "stricter the performance goals set since: calls/s per core at least 1.25x "
        "Kamailio's, CPU per call at 2,000 and 3,000 calls/s at most 0.8x its, the "
        "INVITE->200 p99 at half capacity no higher than its, two workers at most 1.1x the "
        "CPU per call of one.\n"
    )
    if mode != "full":
        parts.append(
            "> **This is a `--quick` run**: short steps, a coarse ladder. Use a full run for "
            "figures to quote.\n"
        )
    if load and load[0] > LOADED:
        parts.append(
            f"> **Perhaps measured with other load on the machine.** The 1-minute load "
            f"average was {load[0]:.2f} when the run started (it averages the minute before: "
            f"whatever ran then on the same {m.get('nproc', '?')} cores), "
            f"{results.get('load_at_end', ['?'])[0]} at the end (the run's own processes "
            "count in it); each step's own reading of other load is in the raw tables. Both "
            "balancers took turns step by step, so any such load hit both, but absolute "
            "figures are lower and noisier than on a quiet machine; ratios are the figures "
            "to read.\n"
        )
    busy_steps = _steps_with_other_load(results, 0.3)
    if busy_steps:
        parts.append(
            f"> **Other load during the run**: in {len(busy_steps)} of the measured steps, "
            "processes other than the ones under test used 0.3 cores or more (up to "
            f"{max(o for _, o in busy_steps):.2f} of {m.get('nproc', '?')}): "
            + ", ".join(f"{name} ({o:.2f})" for name, o in busy_steps[:8])
            + (" and more" if len(busy_steps) > 8 else "")
            + ". The raw tables show it per step; figures from those steps are the noisiest.\n"
        )
    parts.append("## Machine and versions\n")
    parts.append(
        _table(
            ["", ""],
            [
                ["CPU", f"{m.get('nproc')} x {m.get('cpu_model')}"],
                ["RAM", f"{m.get('ram_gib')} GiB"],
                ["Cores", _placement_row(results)],
                ["OS, kernel", f"{m.get('os')}, {m.get('kernel')}"],
                ["Python", f"{m.get('python')} with uvloop {m.get('uvloop')}"],
                ["Kamailio", m.get("kamailio")],
                ["sipp", m.get("sipp")],
                [
                    "sipdispatch",
                    f"commit {m.get('sipdispatch_commit')}"
                    + (" (with uncommitted changes in src/)" if m.get("sipdispatch_dirty") else ""),
                ],
                [
                    "sipdispatch build measured",
                    {
                        "mypyc": "hot path compiled with mypyc (`hack/build-native`), the "
                        "production build"
                        + (
                            "; the pure Python development install beside it"
                            if results.get("ladder_python_build")
                            else ""
                        ),
                        "pure Python": "pure Python (the development install)",
                    }.get(results.get("sipdispatch_build", ""), results.get("sipdispatch_build")),
                ],
                ["load average at start", " / ".join(str(x) for x in load)],
                ["run time", f"{results.get('total_seconds', '?')} s ({mode})"],
                *(
                    [
                        [
                            "phases skipped",
                            ", ".join(results["skipped"]) + " (past the minute each may start "
                            "at; `bench/run --only` with the name, dashes for spaces, runs one)",
                        ]
                    ]
                    if results.get("skipped")
                    else []
                ),
            ],
        )
    )
    parts.append("")
    parts.append("## Command\n")
    parts.append(
        "```sh\n" + results.get("command", "bench/run") + "\n```\n\n"
        "On a fresh Debian machine it installs what is missing (Kamailio and sipp from "
        "Debian's packages, the project and matplotlib in `.venv`), then runs everything over "
        "loopback: two sipp gateways on 127.0.0.2 and 127.0.0.3 per balancer, a sipp caller on "
        "127.0.0.1, each balancer on 127.0.0.1. `bench/run --quick` is a 2-3 minute smoke run; "
        "`--with-cluster` adds the propagation figure on the test control plane "
        "(`hack/test-cluster`, whose binaries are built from Go modules on first use). "
        "Raw results and every process's logs land in `bench/results/<timestamp>/`; "
        "`bench/README.md` describes every phase.\n"
    )
    s = results.get("settings", {})
    parts.append("## What is compared\n")
    parts.append(
        "Both balancers: round robin over two gateways, record-routing, stateful for the "
        "INVITE (Kamailio `t_relay`; sipdispatch's client transaction), failover to the next "
        f"gateway on 5xx or when a gateway sends nothing for {s.get('answer_timeout_s')} s "
        "(Kamailio `fr_timer`, `t_on_failure` + `ds_next_dst`; sipdispatch `--answer-timeout`), "
        f"OPTIONS probes to every gateway every {s.get('probe_interval_s')} s, one failure marks "
        "a gateway down and one success brings it back "
        "(`ds_probing_threshold`/`ds_inactive_threshold` 1; `failureThreshold`/"
        "`successThreshold` 1). Kamailio's config is `bench/kamailio/kamailio.cfg.tmpl`; "
        "sipdispatch's YAML is written by `bench/rigs.py`.\n\n"
        "The call: INVITE -> 100 -> 180 -> 200 -> ACK -> 100 ms -> BYE -> 200 over UDP "
        "(`bench/scenarios/uac.xml`: the test suite's caller, plus a wait of up to 50 ms after "
        "the ACK for a 180 relayed after the 200, which Kamailio with two workers sometimes "
        "does and which sipp would otherwise count as a failed call). "
        "A ladder step places calls at a fixed "
        f"rate for {results.get('ladder_spec', {}).get('step_s', '?')} s; it passes when fewer "
        "than 0.1 % of the calls fail and the caller kept the rate (>= 95 %). A rate that "
        "fails with fewer than 20 % failed calls is tried once more on fresh processes before "
        "it counts, to tell a spike of other load on the machine from the balancer's limit "
        "(both tries are in the raw tables); a collapse is not tried again. The rates grow by "
        f"{results.get('ladder_spec', {}).get('growth', '?')}x until a failure, then "
        f"{results.get('ladder_spec', {}).get('bisections', '?')} bisection(s). The balancers "
        "take turns, one step each. CPU is the balancer's whole process group (Kamailio: all "
        "its processes) from /proc, before and after each step.\n\n"
        '"Per core" is sipdispatch\'s single process against Kamailio with `children=1` (one '
        'UDP worker; its timer, probing and TCP processes still run besides). "All cores": '
        "Kamailio with `children=2`, sipdispatch with `--workers 2` (SO_REUSEPORT; its caller "
        "places each call from a port of its own, `-t un`, so that the kernel's hash spreads "
        'the calls over the workers). "Two workers against one" (`bench/workers.py`): the '
        "same rates, the caller on a port per call for both, the rigs taking turns on fresh "
        "processes; CPU is the whole process group (supervisor and workers), and a try with "
        "0.1 % or more of its calls failed counts its failed calls but not its CPU (a round "
        "gives a ratio when both kept up). Kamailio "
        "`children=1` and `children=2` take their turns in the same rounds with the same "
        "caller, at the rates its one child holds: its ratio is what a second process costs "
        "on this machine, whose cores the workers share with the sipp processes. One process "
        "of each at half the rate takes its turns too: the share of the calls each of two "
        "serves.\n"
    )
    parts.append("## Ratios\n")
    parts.append(
        _table(
            ["figure", "sipdispatch", "Kamailio", "sipdispatch / Kamailio", "target", "verdict"],
            ratio_rows(results),
        )
    )
    parts.append("")
    cc = results.get("core_calls", {}).get("us_per_call")
    parts.append("## What limits each figure\n")
    lines = []
    for kind in (SD, KAM):
        lines.append(  # noqa: PERF401
            f"- **{_label(results, 'ladder_per_core', kind)}, per core**: "
            + _limit_text(results, "ladder_per_core", kind)
            + "."
        )
    for kind in (SD, KAM):
        if _steps(results, "ladder_all_cores", kind):
            lines.append(  # noqa: PERF401
                f"- **{_label(results, 'ladder_all_cores', kind)}, all cores**: "
                + _limit_text(results, "ladder_all_cores", kind)
                + "."
            )
    all_kam = results.get("max_all_cores", {}).get(KAM)
    one_kam = results.get("max_per_core", {}).get(KAM)
    if all_kam and one_kam and all_kam <= one_kam:
        lines.append(
            f"- **All cores is the machine's limit, not the balancers'**: Kamailio with every "
            f"core ({all_kam:,.0f} calls/s) did no better than with one worker "
            f"({one_kam:,.0f}). On {results.get('machine', {}).get('nproc', '?')} cores its "
            "workers share them with each other and with the sipp caller and gateways, and a "
            "step that falls behind collapses (both gateways marked down, see above), so the "
            "all-cores ladder swings by more than a step between runs."
        )
    py_steps = results.get("ladder_python_build", [])
    if py_steps:
        fail = min(
            (st for st in py_steps if not st["passed"] and not st.get("superseded")),
            key=lambda st: st["rate"],
            default=None,
        )
        lines.append(
            f"- **{py_steps[0]['label']}, per core**: "
            + (
                f"first failure at {fail['rate']:,.0f} calls/s: {fail['reason']}; {fail['limit']}"
                if fail
                else "no step failed within the time budget"
            )
            + "."
        )
    workers_limit = _workers_limit_text(results)
    if workers_limit:
        lines.append(workers_limit)
    collapsed = [
        kind
        for kind in (SD, KAM)
        if any(
            "503 No" in what
            for what in (first_fail(results, "ladder_per_core", kind) or {}).get(
                "failure_kinds", {}
            )
        )
    ]
    if collapsed:
        lines.append(
            "- **How the ladders end**: the first failing step of "
            + " and of ".join(_label(results, "ladder_per_core", k) for k in collapsed)
            + ' failed mostly with a 503 from the balancer itself ("no gateway available"): '
            "both gateways had been marked down. With these settings one failure marks a "
            "gateway down (one probe without an answer within 1 s, or one INVITE branch "
            "without a reply for 1 s); a balancer that falls behind (datagrams queued or "
            "dropped) makes exactly that happen, takes both gateways out, and every new call "
            "fails until the next probe brings them back. So the ladders end in a collapse, "
            "not a slow decline, and where it starts moves from run to run by a step or two: "
            "read the maxima as +/- one ladder step."
        )
    drifts = {kind: _cpu_drift(results, kind) for kind in (SD, KAM)}
    for kind, drift in drifts.items():
        if not drift:
            continue
        other = KAM if kind == SD else SD
        lines.append(
            f"- **{_label(results, 'ladder_per_core', kind)}: CPU per call after the ladder**: "
            "in the latency phase (the same process, right after the ladder's top steps) it "
            "spent "
            + ", ".join(f"{a:.3f} s per 1,000 calls at {r:,.0f} calls/s" for r, a, _, _ in drift)
            + " against "
            + ", ".join(f"{b:.3f} at {n:,.0f}" for _, _, b, n in drift)
            + " in the ladder (the nearest rate at or below): the process got slower after "
            "running at its maximum, which the latency figures above carry. Not explained by "
            "this run"
            + (
                ""
                if drifts[other]
                else f"; {_label(results, 'ladder_per_core', other)} shows no such change"
            )
            + "."
        )
    gcd = results.get("gc", {})
    watched = gcd.get("watched", {})
    off = gcd.get("off", {})
    if watched.get("gc"):
        g = watched["gc"]
        lw = watched["step"]["latency"]
        lo = off.get("step", {}).get("latency", {})
        with_gc = lw.get("answer_p99_ms", float("nan"))
        without = lo.get("answer_p99_ms", float("nan"))
        guilty = g["pause_max_ms"] >= 20 and without < 0.6 * with_gc
        lines.append(
            (
                "- **sipdispatch's response-time tail is its garbage collector.** "
                if guilty
                else "- **sipdispatch and Python's garbage collector** (its pauses do not make "
                "the tail in this run). "
            )
            + f"At {gcd['rate']:,.0f} calls/s with every collection timed "
            f"(`bench/gcprobe.py`, {watched['step']['duration_s']:.0f} s on a fresh process): "
            f"{g['collections']:,} collections, {g['pause_total_ms']:,.0f} ms of pauses in all, "
            f"the longest {longest_pause(g)} ({g['pauses_over_ms']['20']} over 20 ms); "
            f"the collector freed {g['collected_per_call']:.1f} objects per call (objects in "
            "reference cycles, which only it frees). INVITE->200 p99 "
            f"{with_gc:.1f} ms with the collector, "
            + (
                f"{without:.1f} ms with it switched off (same rate, same build, a fresh "
                f"process too; {off['step']['failed']} failed calls)"
                if lo
                else "(not measured without it)"
            )
            + "; both runs differ from the latency table's, which ran on the ladder's process."
            + (
                " Other processes on the machine used "
                f"{watched['step'].get('other_cores', 0):.2f} and "
                f"{off.get('step', {}).get('other_cores', 0):.2f} cores during these two runs: "
                "their tails are that load's as much as the proxy's."
                if max(
                    watched["step"].get("other_cores", 0),
                    off.get("step", {}).get("other_cores", 0),
                )
                >= 0.3
                else ""
            )
        )
    buffers = results.get("receive_buffer", {})
    if buffers.get(SD) and buffers.get(KAM):
        lines.append(
            "- **Socket receive buffers** (as the kernel reports them: twice what was asked): "
            f"sipdispatch {buffers[SD]:,} bytes, Kamailio {buffers[KAM]:,} bytes"
            + (
                " (Kamailio's `maxbuffer` is raised to what sipdispatch asks for, so that neither "
                "drops a burst the other absorbs)"
                if buffers[SD] == buffers[KAM]
                else ""
            )
            + ". A balancer "
            "that stops reading for a moment (a garbage collection, a burst of timers, another "
            "process on its core) loses datagrams once its buffer is full, and a lost datagram "
            "costs a retransmission 500 ms later or a failed call; the raw tables count the "
            "drops per socket (`/proc/net/udp`). The sipp processes run with `-buff_size 4 MiB` "
            "so that drops in the load generator are not blamed on a balancer."
        )
    rate, steps = common_rate_steps(results)
    if steps:
        sd_step = steps[SD]
        sipp = sd_step["caller_cpu_s"] + sd_step["gateways_cpu_s"]
        lines.append(
            f"- **The machine**: at {rate:,.0f} calls/s the sipp caller and gateways used "
            f"{sipp / max(1e-6, sd_step['window_s']):.2f} cores of {m.get('nproc')} "
            f"({sipp / max(1, sd_step['created']) * 1000:.2f} CPU s per 1,000 calls), the "
            "balancer what is left. " + placement_text(results)
        )
    ccn = results.get("core_calls_native", {}).get("us_per_call")
    if cc:
        native = (
            f"; compiled with mypyc {ccn:.0f} µs ({1e6 / ccn:,.0f} calls/s per core)" if ccn else ""
        )
        lines.append(
            f"- **sipdispatch's core alone** (`bench/core_calls.py`, no sockets, no event loop): "
            f"pure Python {cc:.0f} µs of CPU per call ({1e6 / cc:,.0f} calls/s per core before "
            f"any I/O){native}. The rest of the cost per call measured above is the event loop, "
            "the datagram I/O (13 datagrams per call), the timers and the probing."
        )
    parts.append("\n".join(lines) + "\n")
    parts.extend(where_time_goes(results))

    parts.append("## Plots\n")
    parts.append(f"![calls/s vs failed calls]({img_rel}/{prefix}cps-failures.png)\n")
    parts.append(f"![latency vs calls/s]({img_rel}/{prefix}latency.png)\n")
    parts.append(f"![CPU per 1,000 calls]({img_rel}/{prefix}cpu.png)\n")

    parts.append("## Raw figures\n")
    tables = [
        (title, _steps(results, section, kind))
        for section, title in (
            ("ladder_per_core", "Ladder, per core"),
            ("ladder_all_cores", "Ladder, all cores"),
        )
        for kind in (SD, KAM)
    ]
    tables.insert(2, ("Ladder, per core", results.get("ladder_python_build", [])))
    for title, steps_ in tables:
        if not steps_:
            continue
        parts.append(f"### {title}: {steps_[0]['label']}\n")
        rows = []
        for st in steps_:
            win = max(1e-6, st["window_s"])
            rows.append(
                [
                    f"{st['rate']:,.0f}",
                    f"{st['achieved_rate']:,.0f}",
                    "pass"
                    if st["passed"]
                    else ("FAIL, tried again" if st.get("superseded") else "FAIL"),
                    f"{st['failed']} ({st['failed_fraction']:.2%})",
                    st["retransmissions"],
                    f"{st['cpu_s_per_1000_calls']:.3f}",
                    f"{st.get('busiest_share', st['busiest_process_cpu_s'] / win):.0%}",
                    f"{st['caller_cpu_s'] / win:.0%}",
                    f"{st['gateways_cpu_s'] / win:.0%}",
                    f"{st['machine_busy_cores']:.2f}",
                    "{balancer} / {gateways} / {caller}".format(
                        **{"balancer": 0, "gateways": 0, "caller": 0, **st.get("drops", {})}
                    ),
                ]
            )
        parts.append(
            _table(
                [
                    "offered cps",
                    "placed cps",
                    "",
                    "failed",
                    "retrans.",
                    "CPU s / 1000 calls",
                    "busiest balancer process (while calls were placed)",
                    "sipp caller",
                    "sipp gateways",
                    "machine busy (cores)",
                    "drops: balancer / gateways / caller",
                ],
                rows,
            )
        )
        parts.append("")
    lat = results.get("latency", {})
    if lat:
        parts.append("### Response times (from the caller's message log, µs timestamps)\n")
        rows = []
        for kind in (SD, KAM):
            for e in lat.get(kind, []):
                la = e["latency"]
                rows.append(
                    [
                        e["label"],
                        f"{e['rate']:,.0f} ({e['fraction']:.0%})"
                        + (f", run {e['repeat']}" if e.get("repeat") else ""),
                        f"{la.get('trying_p50_ms', float('nan')):.2f} / "
                        f"{la.get('trying_p90_ms', float('nan')):.2f} / "
                        f"{la.get('trying_p99_ms', float('nan')):.2f}",
                        f"{la.get('answer_p50_ms', float('nan')):.2f} / "
                        f"{la.get('answer_p90_ms', float('nan')):.2f} / "
                        f"{la.get('answer_p99_ms', float('nan')):.2f}",
                        f"{e['failed']}",
                        f"{e.get('other_cores', 0):.2f}",
                    ]
                )
        for direct in directs(results):
            la = direct["latency"]
            rows.append(
                [
                    "no balancer (caller -> gateway)",
                    f"{direct['rate']:,.0f}",
                    "-",
                    f"{la['answer_p50_ms']:.2f} / {la['answer_p90_ms']:.2f} / "
                    f"{la['answer_p99_ms']:.2f}",
                    direct["failed"],
                    "",
                ]
            )
        parts.append(
            _table(
                [
                    "balancer",
                    "calls/s (of its max)",
                    "INVITE->100 p50 / p90 / p99 ms",
                    "INVITE->200 p50 / p90 / p99 ms",
                    "failed",
                    "other load (cores)",
                ],
                rows,
            )
        )
        parts.append("")
    if watched.get("gc"):
        parts.append("### sipdispatch and its garbage collector\n")
        rows = []
        for name, entry in (
            ("collector on, every collection timed", watched),
            ("collector off", off),
        ):
            if not entry:
                continue
            la = entry["step"]["latency"]
            g = entry.get("gc")
            rows.append(
                [
                    name,
                    f"{la.get('trying_p50_ms', float('nan')):.2f} / "
                    f"{la.get('trying_p99_ms', float('nan')):.2f}",
                    f"{la.get('answer_p50_ms', float('nan')):.2f} / "
                    f"{la.get('answer_p99_ms', float('nan')):.2f} / "
                    f"{la.get('answer_max_ms', float('nan')):.2f}",
                    "-"
                    if not g
                    else (
                        f"{g['collections']:,} collections; gen 0/1/2: "
                        + " / ".join(
                            f"{int(g['generations'][k]['collections'])}" for k in ("0", "1", "2")
                        )
                        + f"; pauses {g['pause_total_ms']:,.0f} ms in all, longest "
                        f"{longest_pause(g)}, over 5/20/100 ms: "
                        f"{g['pauses_over_ms']['5']}/{g['pauses_over_ms']['20']}/"
                        f"{g['pauses_over_ms']['100']}; "
                        f"{g['collected_per_call']:.1f} objects freed per call"
                    ),
                    entry["step"]["failed"],
                    f"{entry['step'].get('other_cores', 0):.2f}",
                ]
            )
        parts.append(
            f"At {gcd['rate']:,.0f} calls/s (half of sipdispatch's maximum), "
            f"{watched['step']['duration_s']:.0f} s each, fresh processes of the same build.\n"
        )
        parts.append(
            _table(
                [
                    "run",
                    "INVITE->100 p50 / p99 ms",
                    "INVITE->200 p50 / p99 / max ms",
                    "garbage collector",
                    "failed",
                    "other load (cores)",
                ],
                rows,
            )
        )
        parts.append("")
    fo = results.get("failover", {})
    if fo:
        parts.append("### Gateway killed under load\n")
        any_fo = next(iter(fo.values()))
        parts.append(
            f"{any_fo['rate']:.0f} calls/s of {any_fo['call_ms']} ms calls; gateway 2 gets "
            f"SIGKILL {any_fo['kill_at_s']:.0f} s in and a new gateway process starts on the same "
            f"address {any_fo['down_s']:.0f} s later. *Cut off*: calls the dead gateway had "
            "accepted (their BYE has nowhere to go; no balancer saves them). *New calls "
            "failed*: every other failed call. *Detect*: kill -> last new INVITE the balancer "
            "still sent to the dead gateway. The gateway stays down longer than the caller waits "
            "for an answer (5 s), so that the retransmitted BYE of a cut-off call cannot reach "
            "the new gateway process on the same address (sipp answers a stray BYE with 200, a "
            "real gateway would not). *Recover*: start of the new gateway process -> first "
            "INVITE it gets. Both are one sample each. A gateway is marked down by the first "
            "INVITE or probe left without an answer for 1 s, and back up by the first probe it "
            "answers, so recovery hangs on where the probe cycle stands when it comes back: "
            "anywhere from 0 to one probe interval (1 s here, without jitter for both).\n"
        )
        rows = []
        for kind in (SD, KAM):
            f = fo.get(kind)
            if not f:
                continue
            rows.append(
                [
                    f["label"],
                    f["created"],
                    f["failed"],
                    f["cut_off"],
                    f["failed_new"],
                    f["sent_to_dead"],
                    f["late_answers"],
                    _fmt(f["detect_s"], 2),
                    "never" if f["recover_s"] is None else _fmt(f["recover_s"], 2),
                    "; ".join(f.get("notes", [])),
                ]
            )
        parts.append(
            _table(
                [
                    "balancer",
                    "calls",
                    "failed",
                    "cut off",
                    "new calls failed",
                    "new INVITEs to the dead gateway",
                    "answered after failover",
                    "detect (s)",
                    "recover (s)",
                    "notes",
                ],
                rows,
            )
        )
        parts.append("")
    mem = results.get("memory_after_ladder", {})
    dlg = results.get("memory_dialogs", {})
    if mem or dlg:
        parts.append("### Memory\n")
        rows = []
        for kind in (SD, KAM):
            a = mem.get(kind)
            d = dlg.get(kind)
            if not a and not d:
                continue
            rows.append(
                [
                    kind,
                    f"{a['rss_mib']:.1f} / {a['pss_mib']:.1f} ({a['processes']} "
                    f"process{'es' if a['processes'] != 1 else ''})"
                    if a
                    else "-",
                    f"{d['idle']['pss_mib']:.1f} -> {d['with_dialogs']['pss_mib']:.1f} "
                    f"(RSS {d['idle']['rss_mib']:.1f} -> {d['with_dialogs']['rss_mib']:.1f}) "
                    f"with {d['dialogs']:,} calls in progress; "
                    f"{d['pss_per_10k_mib']:.1f} MiB per 10,000"
                    if d
                    else "-",
                ]
            )
        parts.append(
            _table(
                [
                    "balancer",
                    "after the highest passed ladder step: RSS / PSS MiB",
                    "PSS MiB idle -> calls in progress (placed at one rate for 20 s)",
                ],
                rows,
            )
        )
        parts.append(
            "\n*After the highest passed ladder step* is read right after the per-core "
            "ladder's highest rate that passed (a failed step restarts the balancer, so the "
            "end of the ladder can be a fresh process): a Python process keeps the memory it "
            "once needed (its "
            "allocator's high-water mark, and garbage waiting for the cyclic collector), "
            "Kamailio's transactions go back to its shared memory pool.\n"
            "\nRSS sums every process of the group, so Kamailio's shared memory counts once per "
            "process; PSS shares it out and is the figure to compare. Neither balancer keeps "
            "dialog state (no `dialog` module in the Kamailio config), so calls in progress "
            "cost only what their open transactions cost.\n"
        )
    parts.append("## sipdispatch only\n")
    parts.append(_table(["figure", "measured", "target"], sd_only_rows(results)))
    if prop.get("every_replica_p99_s") is not None:
        parts.append(
            f"\nPropagation: on the test control plane (`hack/test-cluster`: etcd and "
            f"kube-apiserver as local processes), the operator and {prop['replicas']} proxy "
            "replicas in Kubernetes mode run as the chart's ServiceAccounts; each of "
            f"{prop['changes']} changes creates an EndpointSlice with a new endpoint through the "
            "API, and one thread per replica polls its control API every 3 ms until the new "
            "destination is served (`bench/propagation.py`). Per replica: p50 "
            f"{prop['each_replica_p50_s'] * 1000:.0f} ms, p99 "
            f"{prop['each_replica_p99_s'] * 1000:.0f} ms. A ConfigMap mounted as a volume (the "
            "kubelet's sync) is not measured here: there is no kubelet on the test control "
            "plane.\n"
        )
    probing = results.get("probing", [])
    base = results.get("probing_baseline")
    if probing:
        parts.append(
            "\nProbing: a real `sipdispatch-proxy` with N extra destinations "
            "(`sip:127.1.x.y:PORT`, all answered by one UDP responder, see `bench/extras.py`), "
            "probes every 5 s spread over the interval; CPU of the proxy process over a "
            "window with no calls, as a share of one core (the proxy's idle cost included)."
        )
        with_calls = [p for p in probing if p.get("calls")]
        if with_calls and base:
            bits = [
                f"{p['destinations']:,} destinations: INVITE->200 p99 "
                f"{p['calls']['answer_p99_ms']:.2f} ms, failed {p['calls']['failed']}"
                for p in with_calls
            ]
            parts.append(
                f" Then calls at {with_calls[0]['calls']['rate']} calls/s while it keeps "
                "probing: "
                + "; ".join(bits)
                + f"; against {base['latency'].get('answer_p99_ms', float('nan')):.2f} ms "
                "through the benchmark's proxy, which probes its two gateways only."
            )
        parts.append("\n")
    remap = results.get("remap", [])
    if remap:
        parts.append(
            "\nConsistent hashing: share of keys whose first choice changes when one destination "
            "is added to N (rendezvous hashing, every sipdispatch hash algorithm) against "
            "`hash % n` (Kamailio's hash algorithms).\n"
        )
        parts.append(
            _table(
                ["N", "rendezvous", "ideal 1/(N+1)", "bound 1.2/N", "hash % n"],
                [
                    [
                        r["n"],
                        f"{r['rendezvous']:.3f}",
                        f"{r['ideal']:.3f}",
                        f"{r['bound']:.3f}",
                        f"{r['modulo']:.3f}",
                    ]
                    for r in remap
                ],
            )
        )
        parts.append("")
    phases = results.get("phase_seconds", {})
    if phases:
        parts.append("\n## Run time per phase\n")
        parts.append(_table(["phase", "seconds"], [[k, v] for k, v in phases.items()]))
        parts.append("")
    errors = results.get("errors")
    if errors:
        parts.append("\n## Errors\n")
        parts.append("\n".join(f"- {e}" for e in errors) + "\n")
    return "\n".join(parts).rstrip() + "\n"


def write(results: dict[str, Any], out: Path, *, docs: bool) -> list[Path]:
    """The report into ``out`` (always) and into docs/ (``docs``)."""
    written = []
    written += plots(results, out / "img")
    page = out / "benchmarks.md"
    page.write_text(markdown(results, "img"))
    written.append(page)
    if docs:
        written += plots(results, DOCS / "img")
        doc = DOCS / "benchmarks.md"
        doc.write_text(markdown(results, "img"))
        written.append(doc)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("--docs", action="store_true", help="write docs/benchmarks.md too")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    print(ratio_table_text(results))
    for path in write(results, args.results.parent, docs=args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
