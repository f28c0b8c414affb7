"""sipdispatch against Kamailio's dispatcher, on this machine, over loopback.

Run it through ``bench/run`` (which installs what is missing); ``bench/run --help`` for the
options.  Phases, each bounded in time:

1. the calls-per-second ladder, per core: sipdispatch (one worker) and Kamailio
   (``children=1``) take turns, one step each, up to the highest rate with < 0.1 % failed
   calls; CPU seconds per 1,000 calls from the balancer's process group;
2. response times (INVITE -> 100 and INVITE -> 200, p50/p90/p99) at 25/50/75 % of each
   balancer's own maximum, and straight to a gateway (no balancer) as the floor;
3. the ladder with all cores: Kamailio ``children=2`` and sipdispatch ``--workers 2`` (its
   caller with a port per call, so that the kernel spreads calls over the workers); then
   two workers against one at the same rates (``bench/workers.py``): CPU per call, lost
   calls, each worker's share;
4. a gateway killed at 50 calls/s and started again: failed calls, time to detect and to
   recover;
5. memory: RSS and PSS after the runs, and per 10,000 concurrent calls (full run only);
6. sipdispatch only: probing cost for 1,000 and 10,000 destinations, consistent-hash remap
   fraction, endpoint-change propagation (``--with-cluster``, when it can be measured).

Results go to ``OUT/results.json`` (``--out``, default ``bench/results/<timestamp>/``) with
every process's logs; the ratio table is printed at the end, and a full run writes
``docs/benchmarks.md`` and ``docs/img/bench-*.png`` (``bench/report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import coreprofile  # noqa: E402
import cpurates  # noqa: E402
import extras  # noqa: E402
import failover  # noqa: E402
import report  # noqa: E402
import wakeups  # noqa: E402
import workers  # noqa: E402
from ladder import (  # noqa: E402
    LadderSpec,
    best_rate,
    latency_figures,
    memory_at_best,
    run_ladders,
    run_step,
    take_turns,
)
from rigs import (  # noqa: E402
    CALLER_SCENARIO,
    REPO_ROOT,
    SIPP_BUFFER,
    KamailioRig,
    Rig,
    Settings,
    SipdispatchBuild,
    SipdispatchRig,
    parse_cpus,
    sipdispatch_builds,
)
from variants import DEFAULTS, VARIANTS  # noqa: E402

from sipphelpers import SippLab, kamailio_binary, sipp_binary  # noqa: E402

T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f}s] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# the machine


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    kam = kamailio_binary()
    kam_version = _cmd([kam, "-v"]).splitlines()[0] if kam else "not installed"
    sipp_version = _cmd([sipp_binary(), "-v"]) if shutil.which("sipp") else ""
    sipp_match = re.search(r"SIPp v[\w.\-]+", sipp_version)
    import uvloop  # noqa: PLC0415

    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "uvloop": getattr(uvloop, "__version__", "?"),
        "kamailio": kam_version.replace("version: ", ""),
        "sipp": sipp_match.group(0) if sipp_match else sipp_version[:60],
        "sipdispatch_commit": _cmd(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
        "sipdispatch_dirty": bool(
            _cmd(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"])
        ),
        "load_at_start": [round(x, 2) for x in load],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def share_of_lower_maximum(maxima: dict[str, float | None], fraction: float) -> float | None:
    """``fraction`` of the lower per-core maximum of the two balancers, rounded to 50 calls/s
    (None before the ladder has found either)."""
    found = [m for m in (maxima.get("sipdispatch"), maxima.get("kamailio")) if m]
    return float(max(50, round(min(found) * fraction / 50) * 50)) if found else None


def held_rates(maxima: dict[str, float | None], named: list[float]) -> list[float]:
    """Half and three quarters of the lower per-core maximum of the two balancers (rounded
    to 50 calls/s), when it is under the highest of the ``named`` rates: rates both hold."""
    whole = share_of_lower_maximum(maxima, 1.0)
    if whole is None or whole >= max(named):
        return []
    rates = [share_of_lower_maximum(maxima, f) for f in (0.5, 0.75)]
    return [r for r in dict.fromkeys(rates) if r is not None and r not in named]


def _gc_delta(
    before: dict[str, Any], after: dict[str, Any], start: float, end: float, calls: int
) -> dict[str, Any]:
    """What the collector did between two gcprobe summaries; pauses within [start, end]."""
    gens = {
        g: {k: a[k] - before["generations"][g][k] for k in a}
        for g, a in after["generations"].items()
    }
    pauses = [p for p in after["pauses"] if start <= p[0] <= end]
    return {
        "generations": gens,
        "collections": sum(v["collections"] for v in gens.values()),
        "pause_total_ms": sum(v["pause_total_ms"] for v in gens.values()),
        "pause_max_ms": max((p[2] for p in pauses), default=0.0),
        "pauses_over_ms": {str(b): sum(p[2] > b for p in pauses) for b in (1, 5, 20, 100)},
        "longest": sorted(([p[1], p[2], p[3]] for p in pauses), key=lambda p: -p[1])[:5],
        "collected_per_call": sum(v["collected"] for v in gens.values()) / max(1, calls),
        "seconds": after["time"] - before["time"],
    }


def core_calls_figure(calls: int, python: str = sys.executable) -> dict[str, Any]:
    out = _cmd([python, str(BENCH_DIR / "core_calls.py"), "--calls", str(calls)])
    m = re.search(r"([\d.]+) us of proxy CPU per call", out)
    return {"us_per_call": float(m.group(1)) if m else None, "output": out}


# --------------------------------------------------------------------------------------------
# phases


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.quick = args.quick
        self.out = out
        self.settings = Settings(balancer_cpus=args.balancer_cpus)
        self.lab = SippLab(out / "logs")
        self.rigs: list[Rig] = []
        self.results: dict[str, Any] = {
            "mode": "quick" if self.quick else "full",
            "command": "bench/run"
            + (" --quick" if self.quick else "")
            + (" --no-kamailio" if args.no_kamailio else "")
            + (" --pure-python" if args.pure_python else "")
            + (" --with-cluster" if args.with_cluster else "")
            + (
                f" --balancer-cpus {_cpu_list(args.balancer_cpus)}"
                f" --harness-cpus {_cpu_list(args.harness_cpus)}"
                if args.balancer_cpus
                else ""
            ),
            "settings": self.settings.__dict__,
            "placement": {
                "balancer": list(args.balancer_cpus),
                "harness": list(args.harness_cpus),
            },
        }
        self.builds = sipdispatch_builds(
            None if args.pure_python else os.environ.get("SIPDISPATCH_NATIVE_PROXY")
        )
        self.build: SipdispatchBuild = self.builds.get("native") or self.builds["python"]
        self.results["sipdispatch_build"] = self.build.name
        self.results["builds"] = {k: b.name for k, b in self.builds.items()}

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))

    def rig(self, rig: Rig) -> Rig:
        self.rigs.append(rig)
        return rig.start()

    def close(self) -> None:
        for rig in self.rigs:
            try:
                rig.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {rig.label}: {exc}")
        leftovers = self.lab.close()
        if leftovers:
            log(f"stopped processes that were still running: {leftovers}")

    # ---------------------------------------------------------------- 1. ladder per core

    def ladder_per_core(self) -> None:
        spec = (
            LadderSpec(start_rate=300, growth=2.0, bisections=1, step_s=4)
            if self.quick
            else LadderSpec(start_rate=250, growth=1.5, bisections=2, step_s=8)
        )
        self.results["ladder_spec"] = spec.__dict__
        sd = self.rig(
            SipdispatchRig(self.lab, self.out / "logs", self.settings, "sd", build=self.build)
        )
        rigs: list[Rig] = [sd]
        if not self.args.no_kamailio:
            rigs.append(self.rig(KamailioRig(self.lab, self.out / "logs", self.settings, "kam")))
        self.per_core_rigs = rigs
        log("ladder, one core each: " + " vs ".join(r.label for r in rigs))
        budget = time.monotonic() + (2.0 if self.quick else 4.75) * 60
        ladders = run_ladders(self.lab, rigs, spec, log=log, deadline=budget)
        self.results["ladder_per_core"] = {
            label: [s.as_dict() for s in steps] for label, steps in ladders.items()
        }
        self.results["max_per_core"] = {rig.kind: best_rate(ladders[rig.label]) for rig in rigs}
        self.results["memory_after_ladder"] = {
            rig.kind: memory_at_best(ladders[rig.label]) for rig in rigs
        }
        self.results["receive_buffer"] = {rig.kind: rig.receive_buffer() for rig in rigs}
        self.save()

    # ---------------------------------------------------------------- 2. latency

    def latency(self) -> None:
        fractions = (0.5,) if self.quick else (0.25, 0.5, 0.75)
        seconds = 4 if self.quick else 6
        # The target is on the half-capacity p99: three alternating runs each, and the median
        # counts, so that one stall of the machine does not decide it.
        repeats = {0.5: 1 if self.quick else 3}
        out: dict[str, list[dict[str, Any]]] = {}
        maxima = self.results["max_per_core"]
        for fraction in fractions:
            runs = repeats.get(fraction, 1)
            for repeat in range(1, runs + 1):
                for rig in self.per_core_rigs:
                    top = maxima.get(rig.kind) or 0
                    if not top:
                        continue
                    rate = max(50, round(top * fraction / 10) * 10)
                    step = run_step(self.lab, rig, rate, seconds, call_ms=100, trace=True)
                    if not step.passed:
                        rig.restart()
                    entry = step.as_dict() | {"fraction": fraction}
                    if runs > 1:
                        entry["repeat"] = repeat
                    out.setdefault(rig.kind, []).append(entry)
                    lat = step.latency
                    log(
                        f"  latency {rig.label:28s} {rate:6.0f} cps ({fraction:.0%} of max"
                        + (f", run {repeat}" if runs > 1 else "")
                        + f"): 100 p50/p99 {lat.get('trying_p50_ms', float('nan')):.2f}/"
                        f"{lat.get('trying_p99_ms', float('nan')):.2f} ms, 200 p50/p99 "
                        f"{lat.get('answer_p50_ms', float('nan')):.2f}/"
                        f"{lat.get('answer_p99_ms', float('nan')):.2f} ms"
                        + ("" if step.passed else f" ({step.reason})")
                    )
        self.results["latency"] = out
        # both at one rate too: the lower of the two half-capacity rates
        halves_by_kind = {
            kind: half for kind in out if (half := report.half_latency(self.results, kind))
        }
        if len(halves_by_kind) == 2:
            rate = min(e["rate"] for e in halves_by_kind.values())
            same: dict[str, Any] = {}
            for rig in self.per_core_rigs:
                entry = halves_by_kind[rig.kind]
                if entry["rate"] != rate:
                    step = run_step(self.lab, rig, rate, seconds, call_ms=100, trace=True)
                    if not step.passed:
                        rig.restart()
                    entry = step.as_dict() | {"fraction": rate / maxima[rig.kind]}
                    lat = step.latency
                    log(
                        f"  latency {rig.label:28s} {rate:6.0f} cps (same rate): 200 p50/p99 "
                        f"{lat.get('answer_p50_ms', float('nan')):.2f}/"
                        f"{lat.get('answer_p99_ms', float('nan')):.2f} ms"
                    )
                same[rig.kind] = entry
            self.results["latency_same_rate"] = same
        # the floor: straight to one gateway, at each half-capacity rate (the caller and the
        # gateways have more to do at the higher one too)
        halves = {e["rate"] for entries in out.values() for e in entries if e["fraction"] == 0.5}
        self.results["latency_direct"] = [self._direct(rate, seconds) for rate in sorted(halves)]
        self.save()

    def _direct(self, rate: float, seconds: float) -> dict[str, Any]:
        gw = self.lab.gateway(
            "direct-gw", ip="127.0.0.4", trace_messages=False, extra_args=SIPP_BUFFER
        )
        try:
            caller = self.lab.caller(
                gw.hostport,
                rate=rate,
                calls=round(rate * seconds),
                call_ms=100,
                trace_messages=True,
                recv_timeout_ms=5000,
                extra_args=SIPP_BUFFER,
                scenario=CALLER_SCENARIO,
            )
            result = caller.run()
            lat = latency_figures(caller)
        finally:
            gw.stop()
        log(
            f"  latency straight to a gateway       {rate:6.0f} cps: 200 p50/p99 "
            f"{lat['answer_p50_ms']:.2f}/{lat['answer_p99_ms']:.2f} ms"
        )
        return {"rate": rate, "failed": result.failed, "latency": lat}

    # ---------------------------------------------------------------- 3. all cores

    def ladder_all_cores(self) -> None:
        """Kamailio with ``children=2`` against sipdispatch with ``--workers 2``."""
        maxima = self.results.get("max_per_core", {})
        sd2 = self.rig(
            workers.worker_rig(
                self.lab, self.out / "logs", self.settings, self.build, workers=2, tag="sd2"
            )
        )
        self.results["all_cores_labels"] = {"sipdispatch": sd2.label}
        self.results["max_all_cores"] = {}
        rigs: list[Any] = [sd2]
        if not self.args.no_kamailio:
            rigs.append(
                self.rig(
                    KamailioRig(self.lab, self.out / "logs", self.settings, "kam2", children=2)
                )
            )
        spec = (
            LadderSpec(growth=1.4, bisections=0, step_s=4)
            if self.quick
            else LadderSpec(growth=1.2, bisections=1, step_s=8)
        )
        log(f"ladder, all cores: {', '.join(rig.label for rig in rigs)}")
        budget = time.monotonic() + (1.0 if self.quick else 3.0) * 60
        # 70 % of the per-core maximum; run alone (--only), from 1,000 calls/s
        starts = [max(100.0, round(maxima.get(rig.kind, 1430) * 0.7 / 50) * 50) for rig in rigs]
        ladders = run_ladders(self.lab, rigs, spec, start_rates=starts, log=log, deadline=budget)
        self.results["ladder_all_cores"] = {
            label: [s.as_dict() for s in steps] for label, steps in ladders.items()
        }
        for rig in rigs:
            self.results["max_all_cores"][rig.kind] = best_rate(ladders[rig.label])
            self.results["all_cores_labels"][rig.kind] = rig.label
            rig.stop()
        self.save()

    def cpu_at_rates(self) -> None:
        """Both balancers' CPU per call at 2,000 and 3,000 calls/s, taking turns on fresh
        processes (``bench/cpurates.py``); a rate above what either passed in the ladder is
        still tried: its failed tries say so. On a machine where the lower of the two
        per-core maxima is under 3,000 calls/s, also at half and three quarters of it, so
        that the comparison is made at rates both can hold."""
        seconds, rounds = (4, 1) if self.quick else (8, 3)
        named = [2000.0, 3000.0]
        self.results["cpu_at_rates"] = cpurates.compare(
            self.lab,
            self.out / "logs",
            self.settings,
            self.build,
            rates=named + held_rates(self.results.get("max_per_core", {}), named),
            seconds=seconds,
            rounds=rounds,
            log=log,
        )
        self.results["cpu_at_rates"]["named_rates"] = named
        self.save()

    def waking_from_idle(self) -> None:
        """Both balancers at half the lower per-core maximum with the cores left to idle and
        kept awake (``bench/wakeups.py``): what waking from idle costs on this machine."""
        half = share_of_lower_maximum(self.results.get("max_per_core", {}), 0.5)
        rate = half if half is not None else 600.0
        seconds, rounds = (4, 2) if self.quick else (8, 3)
        self.results["waking_from_idle"] = wakeups.compare(
            self.lab,
            self.out / "logs",
            self.settings,
            self.build,
            rate=rate,
            seconds=seconds,
            rounds=rounds,
            log=log,
        )
        self.save()

    def core_profile(self) -> None:
        """Instruction counts per call of the compiled core's functions (coreprofile.py)."""
        self.results["core_profile"] = coreprofile.profile_core(
            self.builds["native"].python, self.out / "logs"
        )
        top = self.results["core_profile"]["functions"][:5]
        log(
            f"  {self.results['core_profile']['total_k_per_call']:,.0f}k instructions per call; "
            + ", ".join(f"{f['function']} {f['k_instructions_per_call']:,.0f}k" for f in top)
        )
        self.save()

    def two_workers(self) -> None:
        """Two workers against one at the same rates, taking turns (``bench/workers.py``), and
        Kamailio ``children=2`` against ``children=1`` beside them."""
        # 40 % and 60 % of one worker's capacity (the ladder's, if it ran): the caller's port
        # per call costs sipp more, and at 80 % one worker and two alike failed calls on a
        # 2-core machine, the caller and gateways sharing its cores
        top = self.results.get("max_per_core", {}).get("sipdispatch") or (
            2500 if self.build.name == "mypyc" else 1200
        )
        rates = [float(max(100, round(top * f / 100) * 100)) for f in (0.4, 0.6)]
        seconds, rounds = (5, 2) if self.quick else (8, 4)
        self.results["workers"] = workers.compare(
            self.lab,
            self.out / "logs",
            self.settings,
            self.build,
            rates=rates,
            seconds=seconds,
            rounds=rounds,
            log=log,
            kamailio=not self.args.no_kamailio,
            kamailio_up_to=self.results.get("max_per_core", {}).get("kamailio"),
        )
        self.save()

    # ---------------------------------------------------------------- 2b. garbage collector

    def gc_diagnosis(self) -> None:
        """The response-time tail and the garbage collector: sipdispatch at its half-capacity
        rate with every collection timed, then with the collector off (bench/gcprobe.py)."""
        half = next(
            (
                e
                for e in self.results.get("latency", {}).get("sipdispatch", [])
                if e["fraction"] == 0.5
            ),
            None,
        )
        if half is None:
            return
        rate = half["rate"]
        # long enough for full collections to happen: young ones rarely free a call's cycles
        seconds = 4 if self.quick else 12
        out: dict[str, Any] = {"rate": rate}
        for mode in ("watched", "off"):
            summary = self.out / "logs" / f"gc-{mode}.json"
            extra = ["--summary", str(summary)] if mode == "watched" else ["--gc-off"]
            build = SipdispatchBuild(
                f"{self.build.name}, GC {mode}",
                [self.build.python, str(BENCH_DIR / "gcprobe.py"), *extra, "--"],
                self.build.python,
            )
            rig = self.rig(
                SipdispatchRig(
                    self.lab, self.out / "logs", self.settings, f"sdgc{mode}", build=build
                )
            )
            time.sleep(1.0)
            before = _read_json(summary)
            started = time.time()
            step = run_step(self.lab, rig, rate, seconds, call_ms=100, trace=True)
            ended = time.time()
            time.sleep(0.4)
            after = _read_json(summary)
            rig.stop()
            entry: dict[str, Any] = {"step": step.as_dict()}
            if mode == "watched" and before and after:
                entry["gc"] = _gc_delta(before, after, started, ended, step.created)
            out[mode] = entry
            lat = step.latency
            gcs = entry.get("gc", {})
            log(
                f"  GC {mode:7s} {rate:6.0f} cps: 100 p99 {lat.get('trying_p99_ms', 0):.2f} ms, "
                f"200 p99 {lat.get('answer_p99_ms', 0):.2f} ms"
                + (
                    f"; {gcs['collections']} collections, longest pause "
                    f"{report.longest_pause(gcs)}, {gcs['pause_total_ms']:.0f} ms in all, "
                    f"{gcs['collected_per_call']:.1f} objects freed by the collector per call"
                    if gcs
                    else ""
                )
            )
        self.results["gc"] = out
        self.save()

    # ---------------------------------------------------------------- 3b. pure Python build

    def ladder_python_build(self) -> None:
        """The development install (pure Python hot path), to show what the mypyc build buys:
        from a rate both balancers passed comfortably (so that CPU per call compares at one
        rate for all three) upwards, one try per rate."""
        sd_max = self.results["max_per_core"].get("sipdispatch", 0)
        sd_pass = {
            s["rate"]
            for s in report._steps(self.results, "ladder_per_core", "sipdispatch")
            if s["passed"]
        }
        kam_pass = {
            s["rate"]
            for s in report._steps(self.results, "ladder_per_core", "kamailio")
            if s["passed"]
        }
        both = sorted(r for r in (sd_pass & kam_pass or sd_pass) if r <= 0.6 * sd_max)
        start = both[-1] if both else max(100.0, sd_max / 2)
        rig = self.rig(
            SipdispatchRig(
                self.lab, self.out / "logs", self.settings, "sdpy", build=self.builds["python"]
            )
        )
        spec = LadderSpec(growth=1.3, bisections=0, step_s=8, retry_failed=False)
        log(f"ladder from {start:,.0f} calls/s: {rig.label}")
        budget = time.monotonic() + 60
        ladders = run_ladders(self.lab, [rig], spec, start_rates=[start], log=log, deadline=budget)
        steps = ladders[rig.label]
        self.results["ladder_python_build"] = [s.as_dict() for s in steps]
        self.results["max_python_build"] = best_rate(steps)
        self.results["python_build_cpu_rate"] = start
        rig.stop()
        self.save()

    # ---------------------------------------------------------------- 4. failover

    def failover(self) -> None:
        # down longer than the caller's 5 s answer timeout: a BYE of a cut-off call must not
        # reach the new gateway process on the same address (sipp answers a stray BYE)
        duration_s, kill_at_s = (12.0, 3.0) if self.quick else (20.0, 5.0)
        out = {}
        for rig in self.per_core_rigs:
            res = failover.run_failover(
                self.lab, rig, rate=50, duration_s=duration_s, kill_at_s=kill_at_s, down_s=6.0
            )
            out[rig.kind] = res.as_dict()
            recover = "never" if res.recover_s is None else f"{res.recover_s:.2f} s"
            log(
                f"  gateway killed, {rig.label:28s}: failed {res.failed} "
                f"(cut off {res.cut_off}, new calls {res.failed_new}), "
                f"sent to the dead gateway {res.sent_to_dead}, detect {res.detect_s:.2f} s, "
                f"recover {recover}" + (f"; {'; '.join(res.notes)}" if res.notes else "")
            )
        self.results["failover"] = out
        self.save()

    # ---------------------------------------------------------------- 5. memory

    def memory_dialogs(self) -> None:
        """RSS and PSS with calls in progress: long calls placed at half the lower of the two
        maxima for ``window`` seconds, memory read once all are up, then the caller stopped.
        Reported per 10,000 calls (linear: every call in progress holds the same state)."""
        maxima = self.results["max_per_core"]
        top = min((v for v in maxima.values() if v), default=200.0)
        rate = max(50.0, min(500.0, round(top * 0.5 / 10) * 10))
        window = 20.0
        dialogs = round(rate * window)
        out = {}
        for rig in self.per_core_rigs:
            rig.restart()
            time.sleep(1.0)
            idle = rig.memory()
            caller = self.lab.caller(
                rig.hostport,
                rate=rate,
                calls=dialogs,
                call_ms=round(window * 1000 + 30_000),  # no BYE before the reading
                trace_messages=False,
                recv_timeout_ms=10000,
                extra_args=SIPP_BUFFER,
                scenario=CALLER_SCENARIO,
            ).start()
            time.sleep(window + 1.5)
            peak = rig.memory()
            caller.process.stop()  # by PID; the rig is started afresh below
            scale = 10000 / dialogs
            out[rig.kind] = {
                "rate": rate,
                "dialogs": dialogs,
                "idle": idle,
                "with_dialogs": peak,
                "pss_per_10k_mib": (peak["pss_mib"] - idle["pss_mib"]) * scale,
                "rss_per_10k_mib": (peak["rss_mib"] - idle["rss_mib"]) * scale,
            }
            log(
                f"  memory {rig.label:28s}: idle PSS {idle['pss_mib']:.1f} MiB, with "
                f"{dialogs:,} calls in progress {peak['pss_mib']:.1f} MiB (RSS "
                f"{idle['rss_mib']:.1f} -> {peak['rss_mib']:.1f}): "
                f"{out[rig.kind]['pss_per_10k_mib']:.1f} MiB PSS per 10,000"
            )
            rig.restart()
        self.results["memory_dialogs"] = out
        self.save()

    # ---------------------------------------------------------------- 6. sipdispatch only

    def sipdispatch_only(self) -> None:
        remap = extras.remap_fractions(keys=5000 if self.quick else 20000)
        self.results["remap"] = remap
        for row in remap:
            log(
                f"  remap adding 1 to {row['n']:2d}: rendezvous {row['rendezvous']:.3f} "
                f"(ideal {row['ideal']:.3f}, bound 1.2/N {row['bound']:.3f}), "
                f"hash % n {row['modulo']:.3f}"
            )
        self.save()
        maxima = self.results["max_per_core"]
        calls = None
        if not self.quick and maxima.get("sipdispatch"):
            calls = {"rate": max(50, round(maxima["sipdispatch"] * 0.25 / 10) * 10), "seconds": 6}
        self.results["probing"] = extras.probing_cost(
            self.lab,
            self.out / "logs" / "probing",
            (1000, 10000),
            interval_s=5.0,
            window_s=5.0 if self.quick else 6.0,
            with_calls=calls,
            command=self.build.command,
            log=log,
        )
        if calls:
            # the same calls through the bench rig, which probes only its two gateways
            base = run_step(
                self.lab, self.per_core_rigs[0], calls["rate"], calls["seconds"], trace=True
            )
            self.results["probing_baseline"] = base.as_dict()
            log(
                f"  baseline, 2 destinations, {calls['rate']} cps: answer p99 "
                f"{base.latency.get('answer_p99_ms', float('nan')):.2f} ms, failed {base.failed}"
            )
        why = extras.propagation_status()
        if why is None and not self.args.with_cluster:
            why = "not measured in this run: bench/run --with-cluster measures it"
        if why is None:
            try:
                import propagation  # noqa: PLC0415 - needs the test extras, the test cluster

                measured = propagation.measure_propagation(
                    self.out / "logs" / "propagation", changes=8 if self.quick else 30, log=log
                )
            except Exception as exc:  # a figure, not the whole run
                why = f"not measured: {exc.__class__.__name__}: {str(exc)[:200]}"
            else:
                self.results["propagation"] = measured | {
                    "status": (
                        f"p99 {measured['every_replica_p99_s'] * 1000:,.0f} ms to all "
                        f"{measured['replicas']} replicas (p50 "
                        f"{measured['every_replica_p50_s'] * 1000:,.0f} ms, max "
                        f"{measured['every_replica_max_s'] * 1000:,.0f} ms, "
                        f"{measured['changes']} changes)"
                    )
                }
        if why is not None:
            self.results["propagation"] = {"status": why}
            log(f"  endpoint-change propagation: {why}")
        self.save()

    # ---------------------------------------------------------------- feature costs

    def feature_costs(self) -> None:
        """CPU per call with each feature of ``variants.VARIANTS`` on, beside the plain proxy:
        fresh rigs, the same rate, taking turns; the median of the tries counts.

        Every try runs on fresh processes, started for it and stopped after it: one process
        of the plain proxy kept for all the tries made a steady difference of several % from
        another (its hash seed, where its memory lands, the core it runs on), which fresh
        processes turn into spread, and no idle rig probes in the background of another's
        try. The turns go forwards in one round and backwards in the next, so that no rig
        always runs first or last. Each round gives each variant a paired ratio against the
        plain proxy of the same round (slow drifts of the machine's load cancel in it): their
        spread is reported, and the control variant (the plain proxy again) says how much of
        a difference this machine can resolve at all."""
        # 2,000 calls/s, or less when this machine's ladder (if it ran) topped out near it
        top = self.results.get("max_per_core", {}).get("sipdispatch") or 2500
        rate = 2000 if top >= 2400 else max(100, round(top * 0.8 / 100) * 100)
        seconds, tries = (4, 2) if self.quick else (8, 5)
        rigs = [
            SipdispatchRig(
                self.lab, self.out / "logs", self.settings, "fc", self.build, variant=DEFAULTS
            )
        ]
        rigs += [
            SipdispatchRig(
                self.lab, self.out / "logs", self.settings, f"fc{i}", self.build, variant=variant
            )
            for i, variant in enumerate(VARIANTS, 1)
        ]
        figures: dict[str, list[float]] = {}
        paired: dict[str, list[float]] = {}
        steps: dict[str, list[dict[str, Any]]] = {}
        for tried in take_turns(self.lab, rigs, rate, seconds, tries):
            this_round: dict[str, float] = {}
            for rig, step in tried:
                steps.setdefault(rig.label, []).append(step.as_dict())
                if step.passed:
                    figures.setdefault(rig.label, []).append(step.cpu_ms_per_call)
                    this_round[rig.label] = step.cpu_ms_per_call
            plain_now = this_round.get(rigs[0].label)
            for label, cpu in this_round.items():
                if plain_now is not None and label != rigs[0].label:
                    paired.setdefault(label, []).append(cpu / plain_now)
        plain = statistics.median(figures.get(rigs[0].label) or [float("nan")])
        rows = []
        for rig in rigs:
            cpu = statistics.median(figures.get(rig.label) or [float("nan")])
            name = rig.variant.name if rig.variant else "defaults"
            turns_off = rig.variant is not None and rig.variant.turns_off
            control = rig.variant is not None and rig.variant.control
            ratios = paired.get(rig.label, [])
            rows.append(
                {"name": name, "cpu_s_per_1000_calls": cpu, "ratio": cpu / plain}
                | {"turns_off": turns_off, "control": control, "round_ratios": ratios}
            )
            spread = (
                f"; round by round {min(ratios) - 1:+.1%} to {max(ratios) - 1:+.1%}"
                if ratios
                else ""
            )
            log(
                f"  {name:24s} {rate:5d} cps: {cpu:.3f} CPU s per 1,000 calls "
                f"({cpu / plain - 1:+.1%} against plain{spread}; "
                f"{len(figures.get(rig.label, []))} of {tries} tries passed)"
            )
        self.results["feature_costs"] = {
            "rate": rate,
            "seconds": seconds,
            "tries": tries,
            "rows": rows,
            "steps": steps,
        }
        self.save()

    # ---------------------------------------------------------------- all

    def run(self) -> None:
        self.results["machine"] = machine_info()
        m = self.results["machine"]
        log(
            f"machine: {m['nproc']} x {m['cpu_model']}, {m['ram_gib']} GiB, kernel {m['kernel']}, "
            f"load {m['load_at_start']}; {m['kamailio']}; {m['sipp']}; Python {m['python']}"
        )
        n = 2000 if self.quick else 10000
        self.results["core_calls"] = core_calls_figure(n, self.builds["python"].python)
        log(
            f"core alone, pure Python (bench/core_calls.py): {self.results['core_calls']['output']}"
        )
        if "native" in self.builds:
            self.results["core_calls_native"] = core_calls_figure(n, self.builds["native"].python)
            log(f"core alone, mypyc: {self.results['core_calls_native']['output']}")
        log(f"sipdispatch under test: {self.build.name} ({' '.join(self.build.command)})")
        self.save()
        # (name, phase, latest start in minutes from the beginning: later, it is skipped)
        phases: list[tuple[str, Any, float]] = [
            ("ladder per core", self.ladder_per_core, 99),
            ("latency", self.latency, 99),
            ("cpu at fixed rates", self.cpu_at_rates, 99),
            *([] if self.args.no_kamailio else [("waking from idle", self.waking_from_idle, 99)]),
            ("feature costs", self.feature_costs, 99 if self.quick else 12.0),
            ("ladder all cores", self.ladder_all_cores, 99),
            ("two workers", self.two_workers, 99),
        ]
        if not self.quick:
            phases.append(("garbage collector", self.gc_diagnosis, 8.5))
        if not self.quick and self.build is not self.builds["python"]:
            phases.append(("pure Python build", self.ladder_python_build, 10.0))
        phases += [("gateway killed", self.failover, 99)]
        if not self.quick:
            phases.append(("memory with calls in progress", self.memory_dialogs, 11.0))
        if "native" in self.builds and not self.quick:
            phases.append(("profile of the core", self.core_profile, 99))
        phases.append(("sipdispatch only", self.sipdispatch_only, 99))
        if self.args.only:
            phases = [p for p in phases if p[0].replace(" ", "-") in self.args.only]
        self.results["phase_seconds"] = {}
        for name, phase, latest in phases:
            if time.monotonic() - T0 > latest * 60:
                log(f"== {name}: skipped, the run is past {latest:g} minutes")
                self.results.setdefault("skipped", []).append(name)
                continue
            log(f"== {name}")
            started = time.monotonic()
            try:
                phase()
            except Exception as exc:  # the next phases may still measure something
                log(f"phase {name} failed: {exc.__class__.__name__}: {exc}")
                traceback.print_exc()
                self.results.setdefault("errors", []).append(
                    f"{name}: {exc.__class__.__name__}: {exc}"
                )
            finally:
                self.results["phase_seconds"][name] = round(time.monotonic() - started, 1)
                self.save()
        self.results["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
        self.results["total_seconds"] = round(time.monotonic() - T0, 1)


def _stop_on_sigterm() -> None:
    """SIGTERM (and SIGHUP) end the run like Ctrl-C: every process started is stopped by PID
    in the ``finally`` blocks, and what was measured so far is saved."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def _cpus(text: str) -> tuple[int, ...]:
    try:
        return parse_cpus(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus))


def _placement_problem(balancer: tuple[int, ...], harness: tuple[int, ...]) -> str | None:
    """Why the cores given to --balancer-cpus and --harness-cpus will not do, or None."""
    if bool(balancer) != bool(harness):
        return "--balancer-cpus and --harness-cpus go together"
    allowed = os.sched_getaffinity(0)
    outside = sorted(set(balancer + harness) - allowed)
    if outside:
        return f"this process may not run on CPU {_cpu_list(tuple(outside))}"
    shared = sorted(set(balancer) & set(harness))
    if shared:
        return f"CPU {_cpu_list(tuple(shared))} is in both --balancer-cpus and --harness-cpus"
    return None


def main() -> int:
    _stop_on_sigterm()
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 2-3 minute smoke run")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--no-kamailio", action="store_true", help="sipdispatch alone")
    parser.add_argument(
        "--with-cluster",
        action="store_true",
        help="also measure endpoint-change propagation on the test cluster",
    )
    parser.add_argument(
        "--docs",
        choices=("auto", "yes", "no"),
        default="auto",
        help="write docs/benchmarks.md and docs/img (auto: full runs only, not --quick, --only, "
        "--no-kamailio or --pure-python: a partial run would replace the document with a "
        "partial one)",
    )
    parser.add_argument(
        "--pure-python",
        action="store_true",
        help="measure the development install only (default: the mypyc build of "
        "hack/build-native, which bench/run builds, and the pure Python one beside it)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="PHASE",
        help="run only this phase (repeatable): ladder-per-core, latency, feature-costs, "
        "ladder-all-cores, two-workers, gateway-killed, sipdispatch-only, ...",
    )
    parser.add_argument(
        "--balancer-cpus",
        type=_cpus,
        default=(),
        metavar="LIST",
        help="run the balancers on these cores (taskset's form: 2 or 2,3 or 2-3; the first for "
        "one process, the first two for two), with --harness-cpus for sipp and this script: "
        "on a machine with 4 or more cores, a measurement of the balancer without the harness "
        "on its cores (default: both wherever the kernel puts them)",
    )
    parser.add_argument(
        "--harness-cpus",
        type=_cpus,
        default=(),
        metavar="LIST",
        help="the cores for sipp and this script, none of --balancer-cpus (given with it)",
    )
    args = parser.parse_args()
    problem = _placement_problem(args.balancer_cpus, args.harness_cpus)
    if problem:
        parser.error(problem)
    if args.harness_cpus:
        # sipp processes inherit this process's cores; a balancer is started on its own
        os.sched_setaffinity(0, args.harness_cpus)
        if len(args.balancer_cpus) < 2:
            log("one balancer core: the all-cores and two-workers phases run on it alone")
    if not args.no_kamailio and kamailio_binary() is None:
        parser.error("kamailio is not installed (bench/run installs it; or use --no-kamailio)")
    out = args.out or BENCH_DIR / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    log(f"results in {out}")
    bench = Bench(args, out)
    try:
        bench.run()
    finally:
        bench.close()
        bench.save()
    results = bench.results
    print()
    print(report.ratio_table_text(results))
    print()
    full = not (args.quick or args.only or args.no_kamailio or args.pure_python)
    docs = args.docs == "yes" or (args.docs == "auto" and full)
    written = report.write(results, out, docs=docs)
    for path in written:
        log(f"wrote {path}")
    log(f"done in {time.monotonic() - T0:.0f} s")
    if results.get("errors"):
        log("errors: " + "; ".join(results["errors"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
