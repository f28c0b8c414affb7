"""A gateway killed under load, and brought back.

At ``rate`` calls/s through a rig, gateway 2 gets SIGKILL ``kill_at_s`` into the run and a new
gateway process starts on the same address ``down_s`` later.  From the message logs (the
caller's and the gateways', microsecond timestamps):

* **cut off**: calls the dead gateway had accepted before it died (no balancer can save them:
  their BYE goes to the gateway that answered);
* **failed new calls**: calls that failed although their INVITE was sent after the kill (the
  balancer sent them to the dead gateway and did not fail over in time);
* **time to detect**: from the kill to the last INVITE the balancer still sent to the dead
  gateway (seen as a call that failed or was answered only after the failover timeout);
  0 when no new call went there;
* **time to recover**: from the start of the new gateway process to the first INVITE it
  receives from the balancer (sipp needs ~0.1 s to start listening).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rigs import CALLER_SCENARIO, SIPP_BUFFER, Rig

from sipphelpers import SippLab, routing_report

__all__ = ["FailoverResult", "run_failover"]


@dataclass
class FailoverResult:
    balancer: str
    label: str
    rate: float
    calls: int
    call_ms: int
    kill_at_s: float
    down_s: float
    created: int = 0
    failed: int = 0
    cut_off: int = 0
    failed_new: int = 0
    sent_to_dead: int = 0  # new INVITEs the balancer sent to the dead gateway
    late_answers: int = 0  # answered after the failover timeout (second attempt)
    detect_s: float | None = None
    recover_s: float | None = None  # None: never within the run
    per_gateway: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_failover(
    lab: SippLab,
    rig: Rig,
    *,
    rate: float = 50.0,
    duration_s: float = 24.0,
    kill_at_s: float = 6.0,
    down_s: float = 6.0,
    call_ms: int = 1000,
    recv_timeout_ms: int = 5000,
) -> FailoverResult:
    calls = round(rate * duration_s)
    out = FailoverResult(rig.kind, rig.label, rate, calls, call_ms, kill_at_s, down_s)
    rig.restart(trace_gateways=True)
    time.sleep(2.5)  # both gateways probed and up
    caller = lab.caller(
        rig.hostport,
        rate=rate,
        calls=calls,
        call_ms=call_ms,
        trace_messages=True,
        recv_timeout_ms=recv_timeout_ms,
        extra_args=SIPP_BUFFER,
        scenario=CALLER_SCENARIO,
    ).start()
    started = time.monotonic()
    time.sleep(kill_at_s)
    dead = rig.gateways[1]
    killed_at = time.time()
    dead.kill()
    time.sleep(max(0.0, started + kill_at_s + down_s - time.monotonic()))
    back_at = time.time()  # the new gateway process starts now
    back = rig.new_gateway(1, trace_messages=True)
    rig.gateways[1] = back
    result = caller.wait()

    out.created = result.created
    out.failed = result.failed + max(0, calls - result.created)
    messages = caller.messages()
    invite_sent: dict[str, float] = {}
    for m in messages:
        if m.direction == "S" and m.method == "INVITE":
            invite_sent.setdefault(m.call_id, m.time)
    completed = caller.completed_call_ids()
    answer = caller.answer_delays()
    lost = set(invite_sent) - completed

    dead_calls = dead.calls()
    cut_off = {
        cid
        for cid, call in dead_calls.items()
        if cid in invite_sent and call.got_invite and not call.bye_answered
    }
    out.cut_off = len(cut_off)
    # every lost call the dead gateway had not accepted is one the balancer could have saved
    failed_new = lost - cut_off
    out.failed_new = len(failed_new)
    late = {
        cid
        for cid, t in invite_sent.items()
        if t >= killed_at - 0.05
        and cid in answer
        and answer[cid] >= 0.8 * rig.settings.answer_timeout_s
    }
    out.late_answers = len(late)
    # the new INVITEs sent while the gateway was dead that went to it: failed or answered late
    to_dead = {cid for cid in (late | failed_new) if killed_at - 0.05 <= invite_sent[cid] < back_at}
    out.sent_to_dead = len(to_dead)
    out.detect_s = max((invite_sent[c] - killed_at for c in to_dead), default=0.0)

    back_invites = [m.time for m in back.messages() if m.direction == "R" and m.method == "INVITE"]
    out.recover_s = (min(back_invites) - back_at) if back_invites else None
    report = routing_report([rig.gateways[0], dead, back])
    out.per_gateway = dict(report.per_gateway)
    if report.answered_twice:
        out.notes.append(f"{len(report.answered_twice)} calls answered twice")
    if report.bye_elsewhere:
        out.notes.append(f"{len(report.bye_elsewhere)} BYEs at a gateway that did not answer")
    odd = {c for c in failed_new if not killed_at - 0.05 <= invite_sent[c] < back_at}
    if odd:
        out.notes.append(f"{len(odd)} failed calls had their INVITE sent while both were up")
    return out
