"""Figures only sipdispatch has: consistent-hash remapping, probing cost, table propagation.

* **remap fraction**: rendezvous hashing (``algorithms.rendezvous_order``, what every hash
  algorithm of sipdispatch uses) against Kamailio's ``hash % n``: the share of keys whose
  first choice changes when one destination is added to N.  Pure computation.
* **probing cost**: a real ``sipdispatch-proxy`` with N extra destinations in a second set,
  all answered by one small UDP responder (every 127.x.y.z address reaches a socket bound
  to 0.0.0.0, so 10,000 destinations need one socket), probed every ``interval`` seconds;
  the proxy's CPU over a window, as a share of one core.  Optionally calls through the
  proxy's first set at the same time, to see whether probing delays them.
* **endpoint-change propagation**: needs the operator and the proxy's Kubernetes source
  (``sipdispatch.proxy.kubetable``) and the test cluster; see ``propagation_status``.
"""

from __future__ import annotations

import random
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladder import latency_figures
from rigs import (
    CALLER_SCENARIO,
    GATEWAY_IPS,
    REPO_ROOT,
    SIPP_BUFFER,
    Settings,
    SipdispatchBalancer,
    cpu_by_pid,
)

from sipdispatch.dispatch.algorithms import _hash64, rendezvous_order
from sipphelpers import ManagedProcess, SippGateway, SippLab, free_port

__all__ = ["probing_cost", "propagation_status", "remap_fractions"]


# --------------------------------------------------------------------------------------------
# consistent hashing


@dataclass(frozen=True)
class _Dest:
    """A destination as the hashing reads it (only its key matters to rendezvous order)."""

    key: str
    priority: int = 0
    weight: int = 0
    rweight: int = 0
    duid: str | None = None
    maxload: int = 0
    active_calls: int = 0
    latency_estimate: float | None = None


def remap_fractions(
    sizes: tuple[int, ...] = (2, 4, 8, 16, 32), keys: int = 20000
) -> list[dict[str, float]]:
    """For each N: share of keys whose destination changes when destination N+1 is added,
    with rendezvous hashing and with ``hash % n``."""
    rng = random.Random(7)
    names = [f"{rng.getrandbits(64):016x}@callid" for _ in range(keys)]
    out = []
    for n in sizes:
        before = [_Dest(f"sip:10.0.{i // 250}.{i % 250 + 1}:5060") for i in range(n)]
        after = [*before, _Dest(f"sip:10.9.0.{n + 1}:5060")]
        moved = sum(
            rendezvous_order(k, before)[0].key != rendezvous_order(k, after)[0].key for k in names
        )
        moved_mod = sum(_hash64(k) % n != _hash64(k) % (n + 1) for k in names)
        out.append(
            {
                "n": n,
                "keys": keys,
                "rendezvous": moved / keys,
                "modulo": moved_mod / keys,
                "ideal": 1 / (n + 1),
                "bound": 1.2 / n,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# probing cost

_RESPONDER = textwrap.dedent(
    """
    # answers every OPTIONS sent to any 127.x.y.z:PORT with 200; exits after LIFE seconds
    import socket, sys, time
    port, life = int(sys.argv[1]), float(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.5)
    end = time.monotonic() + life
    keep = (b"via", b"from", b"to", b"call-id", b"cseq")
    while time.monotonic() < end:
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        head = data.split(b"\\r\\n\\r\\n", 1)[0].split(b"\\r\\n")
        if not head or not head[0].startswith(b"OPTIONS "):
            continue
        lines = [b"SIP/2.0 200 OK"]
        for line in head[1:]:
            name = line.split(b":", 1)[0].strip().lower()
            if name in keep:
                lines.append(line + (b";tag=r" if name == b"to" and b"tag=" not in line else b""))
        lines.append(b"Content-Length: 0")
        s.sendto(b"\\r\\n".join(lines) + b"\\r\\n\\r\\n", addr)
    """
)


def _probe_destinations(count: int, port: int) -> list[str]:
    """``count`` distinct loopback addresses (127.1.0.1 ...), all on ``port``."""
    return [f"sip:127.1.{i // 250}.{i % 250 + 1}:{port}" for i in range(count)]


def probing_cost(
    lab: SippLab,
    workdir: Path,
    counts: tuple[int, ...],
    *,
    interval_s: float = 5.0,
    window_s: float = 10.0,
    with_calls: dict[str, Any] | None = None,
    command: list[str] | None = None,
    log: Any = print,
) -> list[dict[str, Any]]:
    """CPU of a sipdispatch proxy probing ``count`` destinations every ``interval_s``, over
    ``window_s`` with no calls (the proxy's idle cost included).

    ``with_calls``: ``{"rate": r, "seconds": s}`` then places calls through set 1 (two sipp
    gateways) while it keeps probing, and reports their response times.
    """
    results = []
    workdir.mkdir(parents=True, exist_ok=True)
    responder_port = free_port("127.0.0.1")
    script = workdir / "options_responder.py"
    script.write_text(_RESPONDER)
    settings = Settings()
    for count in counts:
        responder = ManagedProcess(
            f"responder-{count}",
            [sys.executable, str(script), str(responder_port), str(window_s * 3 + 60)],
            workdir,
        )
        gateways: list[SippGateway] = []
        balancer = None
        try:
            responder.spawn()
            # set 1: the two gateways (calls go there, if any)
            gateways = [
                lab.gateway(
                    f"probe{count}-gw{i + 1}",
                    ip=GATEWAY_IPS[i],
                    port=free_port(GATEWAY_IPS[i]),
                    trace_messages=False,
                    timeout_s=window_s * 3 + 60,
                    extra_args=SIPP_BUFFER,
                )
                for i in range(2)
            ]
            balancer = SipdispatchBalancer(
                workdir, gateways, settings, f"probe-{count}-proxy", command=command
            )
            _write_probe_config(
                balancer, gateways, _probe_destinations(count, responder_port), interval_s
            )
            t_start = time.monotonic()
            balancer.start(ready_timeout=60)
            startup_s = time.monotonic() - t_start
            # one interval to spread the first round of probes over, then measure
            time.sleep(interval_s + 1)
            # the probing alone: the proxy's CPU over the window, no calls
            cpu0 = sum(cpu_by_pid(balancer.process).values())
            t0 = time.monotonic()
            time.sleep(window_s)
            window = time.monotonic() - t0
            cpu = sum(cpu_by_pid(balancer.process).values()) - cpu0
            probes_sent = count * window / interval_s
            status = _destinations_up(balancer, count)
            # then calls while it probes: are they delayed?
            figures: dict[str, Any] = {}
            if with_calls:
                caller = lab.caller(
                    balancer.hostport,
                    rate=with_calls["rate"],
                    calls=round(with_calls["rate"] * with_calls["seconds"]),
                    call_ms=100,
                    trace_messages=True,
                    recv_timeout_ms=5000,
                    extra_args=SIPP_BUFFER,
                    scenario=CALLER_SCENARIO,
                )
                result = caller.run()
                figures = latency_figures(caller)
                figures["failed"] = result.failed
                figures["rate"] = with_calls["rate"]
            entry = {
                "destinations": count,
                "interval_s": interval_s,
                "window_s": window,
                "cpu_s": cpu,
                "core_share": cpu / window,
                "us_per_probe": cpu / max(1.0, probes_sent) * 1e6,
                "startup_s": startup_s,
                "up": status,
                "calls": figures,
            }
            log(
                f"  probing {count} destinations every {interval_s:g}s: "
                f"{entry['core_share']:.1%} of a core ({entry['us_per_probe']:.0f} us/probe, "
                f"idle cost included), {status} up"
                + (
                    f"; calls at {figures['rate']} cps: answer p99 "
                    f"{figures['answer_p99_ms']:.2f} ms, failed {figures['failed']}"
                    if figures
                    else ""
                )
            )
            results.append(entry)
        finally:
            if balancer is not None:
                balancer.stop()
            for gw in gateways:
                gw.stop()
            responder.stop()
    return results


def _write_probe_config(
    balancer: SipdispatchBalancer, gateways: list[SippGateway], uris: list[str], interval: float
) -> None:
    set1 = "".join(f"      - uri: sip:{gw.hostport}\n" for gw in gateways)
    set2 = "".join(f"      - uri: {uri}\n" for uri in uris)
    balancer.config.write_text(
        "# written by bench/extras.py: probing cost\n"
        f"listen:\n  - udp:{balancer.ip}:{balancer.port}\n"
        "defaultSet: 1\n"
        "sets:\n"
        f"  - id: 1\n    algorithm: round-robin\n    destinations:\n{set1}"
        f"  - id: 2\n    algorithm: round-robin\n    destinations:\n{set2}"
        "probing:\n"
        "  mode: all\n"
        f"  interval: {interval:g}\n"
        "  timeout: 2\n"
        "  failureThreshold: 3\n"
        "  successThreshold: 2\n"
    )


def _destinations_up(balancer: SipdispatchBalancer, count: int) -> str:
    try:
        data = balancer.api("/v1/destinations")
    except Exception as exc:
        return f"unknown ({exc.__class__.__name__})"
    up = total = 0
    for dest in _walk_destinations(data):
        total += 1
        if str(dest.get("state", "")).startswith("A"):
            up += 1
    return f"{up}/{total}"  # set 1's two gateways included


def _walk_destinations(data: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(data, dict):
        if "uri" in data:
            out.append(data)
        for value in data.values():
            out += _walk_destinations(value)
    elif isinstance(data, list):
        for value in data:
            out += _walk_destinations(value)
    return out


# --------------------------------------------------------------------------------------------
# endpoint-change propagation


def propagation_status() -> str | None:
    """None when the pieces exist to measure propagation; otherwise why not."""
    needed = (
        REPO_ROOT / "src" / "sipdispatch" / "proxy" / "kubetable.py",
        REPO_ROOT / "src" / "sipdispatch" / "operator" / "__main__.py",
        REPO_ROOT / "tests" / "e2e" / "kubeproc.py",
        REPO_ROOT / "hack" / "test-cluster",
    )
    missing = [str(p.relative_to(REPO_ROOT)) for p in needed if not p.exists()]
    if missing:
        return "not measured yet: " + ", ".join(missing) + " not written yet"
    return None
