"""The bench's core placement (``bench/run --balancer-cpus``/``--harness-cpus``): a balancer
started apart runs, with every process it forks, on its own cores, and the harness keeps its."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sipphelpers import REPO_ROOT, SippLab, sip_options_ping

sys.path.insert(0, str(REPO_ROOT / "bench"))
from rigs import KamailioRig, Settings, parse_cpus

pytestmark = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs two cores this process may use"
)


def _allowed(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return set(parse_cpus(line.split(":", 1)[1]))
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def test_cpu_lists_read_as_taskset_writes_them() -> None:
    assert parse_cpus("0") == (0,)
    assert parse_cpus("2,3") == (2, 3)
    assert parse_cpus("2-4,0") == (2, 3, 4, 0)
    assert parse_cpus("1,1") == (1,)
    with pytest.raises(ValueError, match="not a CPU list"):
        parse_cpus("two")


def test_a_balancer_set_apart_runs_on_its_core_with_every_process_it_forks(
    sipp_lab: SippLab, kamailio_bin: str, tmp_path: Path
) -> None:
    harness = sorted(os.sched_getaffinity(0))
    core = harness[-1]
    rig = KamailioRig(sipp_lab, tmp_path / "rig", Settings(balancer_cpus=(core, harness[0])))
    rig.start()
    try:
        kamailio = rig.process.group_pids()
        assert len(kamailio) > 1  # its main process and the workers it forked
        assert {pid: _allowed(pid) for pid in kamailio} == {pid: {core} for pid in kamailio}
        # children=1 takes the first core of the list; the harness keeps its cores
        gateways = [gw.process.pid for gw in rig.gateways]
        assert {pid: _allowed(pid) for pid in gateways} == {pid: set(harness) for pid in gateways}
        assert sorted(os.sched_getaffinity(0)) == harness
        assert sip_options_ping(*_host_port(rig.hostport), timeout=2.0) == 200
    finally:
        rig.stop()


def _host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)
