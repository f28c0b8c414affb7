"""Where the compiled core's time goes, measured in the run: instruction counts per call.

``bench/core_calls.py`` (the benchmark's call flow through ``Proxy.receive``, no sockets) runs
twice under valgrind's callgrind, with two numbers of calls; each function's inclusive count
in the longer run less the shorter one's, divided by the difference in calls, is its cost
per call with the start-up (imports, the first calls) cancelled out. Instruction counts, not
times: they do not move with the machine's other load, so two runs, or two commits, compare
to the instruction. The functions are mypyc's (``CPyDef_<module>___<Class>___<method>``),
with the hand-written C as its module names it (``sip._lines.scan``), so this needs the
compiled build; the harness parses three messages per call itself, which shows in
``codec.parse`` but not under ``Proxy.receive``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["profile_core"]

BENCH_DIR = Path(__file__).resolve().parent
_TOTAL = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+PROGRAM TOTALS", re.MULTILINE)
_FUNCTION = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*?:CPyDef_(\w+)", re.MULTILINE)
#: the hand-written C of the compiled build (sip/_lines.c, sip/_tokens.c), named as its
#: Python callers see it
_HAND_WRITTEN = re.compile(
    r"^\s*([\d,]+) \([^)]*\)\s+\S*?sip/(_lines|_tokens)\.c:(\w+)", re.MULTILINE
)
#: rows of the summary: the costliest functions, inclusive (they nest: rows do not add up)
ROWS = 16


def _counts(text: str) -> tuple[int, dict[str, int]]:
    """The program's total and each compiled function's inclusive count (its largest row)."""
    total = _TOTAL.search(text)
    functions: dict[str, int] = {}
    for m in _FUNCTION.finditer(text):
        name, count = m.group(2), int(m.group(1).replace(",", ""))
        functions[name] = max(count, functions.get(name, 0))
    for m in _HAND_WRITTEN.finditer(text):
        name, count = f"sip___{m.group(2)}___{m.group(3)}", int(m.group(1).replace(",", ""))
        functions[name] = max(count, functions.get(name, 0))
    return (int(total.group(1).replace(",", "")) if total else 0), functions


def _readable(mypyc_name: str) -> str:
    """``proxy___Proxy___receive`` -> ``proxy.Proxy.receive``."""
    return ".".join(part for part in mypyc_name.split("___") if part)


def profile_core(python: str, workdir: Path, calls: tuple[int, int] = (300, 900)) -> dict[str, Any]:
    """Thousand instructions per call of the costliest compiled functions, and of the whole
    (``python`` runs the compiled build). Raises when valgrind is missing."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        raise RuntimeError("valgrind is not installed (Debian package valgrind)")
    measured = []
    for n in calls:
        out = workdir / f"callgrind-{n}.out"
        subprocess.run(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
                *(python, str(BENCH_DIR / "core_calls.py"), "--calls", str(n)),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            timeout=900,
            check=True,
        )
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        measured.append(_counts(annotated))
    (total0, first), (total1, second) = measured
    span = calls[1] - calls[0]
    per_call = {
        _readable(name): (count - first.get(name, 0)) / span / 1000
        for name, count in second.items()
        if "__top_level__" not in name
    }
    top = sorted(per_call.items(), key=lambda item: -item[1])[:ROWS]
    return {
        "calls": list(calls),
        "total_k_per_call": (total1 - total0) / span / 1000,
        "functions": [{"function": name, "k_instructions_per_call": k} for name, k in top],
    }
