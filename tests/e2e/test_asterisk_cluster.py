"""Three real Asterisk boxes behind the proxy (built by hack/asterisk), called by sipp.

Asterisk authenticates every caller itself (401 with its own nonce, then the INVITE again with
credentials) and answers the proxy's OPTIONS probes, having identified the proxy by its address.
Which box took a call is read from that box's own CDR (the dialplan writes the SIP Call-ID into
the CDR's user field), never from the proxy.
"""

from __future__ import annotations

import time

import pytest
from asterisklab import AsteriskLab, duplicates

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

PROBING = """\
probing:
  mode: all
  interval: 1
  timeout: 1
  failureThreshold: 2
  successThreshold: 1
"""


def table(lab: AsteriskLab) -> str:
    destinations = "".join(f'      - uri: "{box.uri}"\n' for box in lab.boxes)
    # no algorithm named: the default (round-robin)
    return f"sets:\n  - id: 1\n    destinations:\n{destinations}{PROBING}"


def wait_states(lab: AsteriskLab, want: dict[str, str], timeout: float) -> float:
    """Wait until each box URI shows its wanted state in ``sipdispatch-ctl list``; seconds."""
    proxy = lab.proxies[-1]
    start = time.monotonic()
    seen: dict[str, str] = {}
    while time.monotonic() - start < timeout:
        seen = {uri: proxy.destination(uri)["state"] for uri in want}
        if seen == want:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"states {seen}, wanted {want} within {timeout}s")


def test_three_boxes_take_authenticated_calls_in_turn(asterisk_lab: AsteriskLab) -> None:
    lab = asterisk_lab
    for _ in range(3):
        lab.box()
    proxy = lab.proxy(table(lab))
    lab.start_boxes(proxy)
    took = wait_states(lab, {box.uri: "AP" for box in lab.boxes}, timeout=20)

    calls = 30
    caller, result = lab.sipp_calls(proxy, calls, call_ms=1000)
    call_ids = caller.call_ids()
    taken = lab.taken_by(call_ids)
    per_box = {name: len(cids) for name, cids in taken.items()}
    answered_metric = {
        box.name: proxy.metric(f'sipdispatch_calls_answered_total{{set="1",uri="{box.uri}"}}')
        for box in lab.boxes
    }
    print(
        f"\n{calls} calls placed, {result.successful} connected (401 then credentials, "
        f"answer {result.answer_ms_mean:.0f} ms mean); the boxes' CDRs: {per_box}; "
        f"the proxy's 2xx per box: {answered_metric}; all AP {took:.1f}s after start"
    )
    assert result.successful == calls, result.summary()
    assert len(call_ids) == calls
    assert not duplicates(taken)
    assert set().union(*map(set, taken.values())) == call_ids, "calls missing from every CDR"
    # round-robin, the retry after the 401 kept on the box that challenged: 10 each
    assert per_box == {box.name: calls // 3 for box in lab.boxes}
    # Asterisk challenged every call itself: each call-id got one 401 from the box
    challenged = sum(1 for m in caller.messages() if m.direction == "R" and m.status == 401)
    assert challenged == calls


def test_probes_follow_a_box_that_stops_and_comes_back(asterisk_lab: AsteriskLab) -> None:
    lab = asterisk_lab
    for _ in range(3):
        lab.box()
    proxy = lab.proxy(table(lab))
    lab.start_boxes(proxy)
    wait_states(lab, {box.uri: "AP" for box in lab.boxes}, timeout=20)

    stopped = lab.boxes[1]
    stopped.stop()
    went_down = wait_states(lab, {stopped.uri: "IP"}, timeout=10)
    caller, result = lab.sipp_calls(proxy, 12, call_ms=300)
    while_down = {name: len(cids) for name, cids in lab.taken_by(caller.call_ids()).items()}

    stopped.start(proxy.hostport)
    came_back = wait_states(lab, {box.uri: "AP" for box in lab.boxes}, timeout=20)
    caller2, result2 = lab.sipp_calls(proxy, 9, call_ms=300)
    after = {name: len(cids) for name, cids in lab.taken_by(caller2.call_ids()).items()}
    print(
        f"\n{stopped.name} stopped: IP after {went_down:.1f}s; 12 calls placed, "
        f"{result.successful} connected, CDRs {while_down}; started again: AP after "
        f"{came_back:.1f}s; 9 calls placed, {result2.successful} connected, CDRs {after}"
    )
    assert result.successful == 12, result.summary()
    assert while_down[stopped.name] == 0
    assert sum(while_down.values()) == 12
    assert result2.successful == 9, result2.summary()
    assert after == {box.name: 3 for box in lab.boxes}
