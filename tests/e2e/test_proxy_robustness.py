"""Malformed and torture messages sent to a running proxy: each is answered or dropped as its
RFC expects, logged once, leaves no state behind, and disturbs no call in progress."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy, send_datagrams

from corpus import MESSAGES
from sipphelpers import SippLab, dispatch_problems, routing_report

pytestmark = pytest.mark.sipp

REQUESTS = [m for m in MESSAGES if m.kind == "request"]
REJECTED = [m for m in REQUESTS if m.outcome == "reject"]


def _call_id(data: bytes) -> str | None:
    for line in data.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode()
    return None


def test_torture_datagrams_get_their_answers_and_leave_no_state(
    sipp_lab: SippLab, tmp_path: Path, proxy_build: list[str] | None
) -> None:
    # Destinations that never answer: forwarded torture requests time out and fail over fast.
    proxy = SipdispatchProxy(
        tmp_path / "proxy",
        [],
        table_text="1 sip:127.0.0.9:5060\n1 sip:127.0.0.10:5060\n",
        # The parser's answers, not the request policy's: any method, any Request-URI host
        # (the corpus shares Call-IDs between its REGISTERs, which the policy would refuse).
        extra_args=[
            *("--answer-timeout", "0.3", "--timer-t1", "0.05"),
            *("--allow-methods", "*", "--allow-domain", "*"),
        ],
        command=proxy_build,
    )
    proxy.start()
    try:
        replies = send_datagrams(proxy.ip, proxy.port, [m.data for m in MESSAGES], wait=2.0)
        statuses = [int(r.split(b" ", 2)[1]) for r in replies if r.startswith(b"SIP/2.0 ")]
        for case in REJECTED:
            expected = set(case.response_codes)
            assert expected & set(statuses), f"{case}: no {sorted(expected)} among {statuses}"
        deadline = time.monotonic() + 15
        while proxy.in_flight() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proxy.in_flight() == 0, proxy.api("/v1/destinations")["status"]
        assert proxy.process.running()
        rejected_lines = [line for line in proxy.log().splitlines() if " rejected " in line]
        for case in REJECTED:
            call_id = _call_id(case.data)
            if call_id is not None and case.outcome == "reject":
                # Logged exactly once, with the Call-ID that lets an operator find it.
                assert sum(f"(Call-ID {call_id})" in line for line in rejected_lines) == 1, case
    finally:
        proxy.stop()


def test_malformed_traffic_disturbs_no_call_in_progress(sipp_lab: SippLab, tmp_path: Path) -> None:
    gw1 = sipp_lab.gateway("gw1")
    gw2 = sipp_lab.gateway("gw2")
    proxy = SipdispatchProxy(tmp_path / "proxy", [gw1, gw2]).start()
    try:
        calls = 500
        caller = sipp_lab.caller(proxy.hostport, rate=50, calls=calls, call_ms=500)
        caller.start()
        stop = threading.Event()

        def noise() -> None:
            bad = [m.data for m in REJECTED]
            while not stop.is_set():
                send_datagrams(proxy.ip, proxy.port, bad, wait=0.0)
                stop.wait(0.5)

        thread = threading.Thread(target=noise)
        thread.start()
        try:
            result = caller.wait(timeout=120)
        finally:
            stop.set()
            thread.join()
        report = routing_report([gw1, gw2], caller.call_ids())
        problems = dispatch_problems(result, report, calls=calls)
        assert not problems, "\n".join(problems)
    finally:
        proxy.stop()
