"""Run ``sipdispatch-proxy`` with its garbage collector watched (or switched off).

    python bench/gcprobe.py --summary FILE [--gc-off] -- PROXY ARGUMENTS...

A diagnostic for the benchmark, not a way to run the proxy: Python's cyclic garbage collector
stops the whole process while it runs, and a long pause shows up as a response-time tail (and,
under load, as datagrams dropped by a full socket buffer).  With ``--summary`` every collection
is timed (``gc.callbacks``) and FILE is rewritten at most 5 times a second with, per
generation, the number of collections, the objects they freed and the total pause, and every
pause of 1 ms or more (wall-clock time, generation, milliseconds, objects freed), so that a
benchmark can pick the ones inside its load window.  ``--gc-off`` disables the collector
instead (reference counting still frees everything that is not in a cycle), to show the
response times without it.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

LONG_MS = 1.0  # pauses this long or longer are listed one by one
MAX_LISTED = 20000


class GcWatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = 0.0
        self.written = 0.0
        self.gens: dict[int, dict[str, float]] = {
            g: {"collections": 0, "collected": 0, "pause_total_ms": 0.0} for g in range(3)
        }
        self.pauses: list[tuple[float, int, float, int]] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.started = now
            return
        pause_ms = (now - self.started) * 1000
        generation = int(info["generation"])
        g = self.gens[generation]
        g["collections"] += 1
        g["collected"] += int(info["collected"])
        g["pause_total_ms"] += pause_ms
        if pause_ms >= LONG_MS and len(self.pauses) < MAX_LISTED:
            self.pauses.append((time.time(), generation, pause_ms, int(info["collected"])))
        if now - self.written >= 0.2:
            self.written = now
            self.write()

    def write(self) -> None:
        data = {"time": time.time(), "generations": self.gens, "pauses": self.pauses}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


def main() -> int:
    args = sys.argv[1:]
    if "--" not in args:
        print(__doc__, file=sys.stderr)
        return 2
    split = args.index("--")
    own, proxy_args = args[:split], args[split + 1 :]
    if "--gc-off" in own:
        gc.disable()
    if "--summary" in own:
        watch = GcWatch(Path(own[own.index("--summary") + 1]))
        watch.write()
        gc.callbacks.append(watch)
    from sipdispatch.proxy.cli import main as proxy_main  # noqa: PLC0415 - after the GC setup

    return proxy_main(proxy_args)


if __name__ == "__main__":
    sys.exit(main())
