"""Parallel forking (algorithm 12) with sipp gateways on loopback: every INVITE goes to both
gateways at once; the first 2xx wins and reaches the caller, the other branch gets a CANCEL.

``fast`` answers at once (``uas``); ``slow`` rings and never answers, and expects the CANCEL:
it answers it 200, ends the INVITE with 487 and waits for the proxy's ACK of the 487. When the
2xx comes before the slow gateway's 180, the proxy holds the CANCEL until the 180 arrives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy

from sipphelpers import SippLab, dispatch_problems, routing_report

pytestmark = pytest.mark.sipp

# A gateway that rings until cancelled: INVITE -> 180 ... CANCEL -> 200, 487 -> ACK.
# OPTIONS (probes) are answered 200 at any time, as in tests/sipp/scenarios/uas.xml.
# No 100 Trying: a proxy may CANCEL as soon as it has any provisional answer (RFC 3261 9.1),
# and a CANCEL that sipp reads before it sent its 180 is "unexpected": sipp answers it 200
# itself and drops the call, so the 487 and the ACK would be missing from its log.
RINGING_UNTIL_CANCELLED = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="sipdispatch uas ringing until cancelled">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE">
    <action>
      <ereg regexp="([0-9]+)" search_in="hdr" header="CSeq:" assign_to="whole,number"/>
    </action>
  </recv>
  <Reference variables="whole"/>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="CANCEL" timeout="10000"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$number] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" next="done"/>
  <label id="options"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="done"/>
  <timewait milliseconds="2000"/>
</scenario>
"""


def test_parallel_forking_first_2xx_wins_and_the_other_branch_is_cancelled(
    sipp_lab: SippLab, tmp_path: Path
) -> None:
    scenario = tmp_path / "uas_ringing_until_cancelled.xml"
    scenario.write_text(RINGING_UNTIL_CANCELLED)
    slow = sipp_lab.gateway("slow", scenario=scenario)
    fast = sipp_lab.gateway("fast")
    proxy = SipdispatchProxy(
        tmp_path / "proxy",
        [slow, fast],
        extra_args=["--algorithm", "parallel", "--probe-interval", "1", "--probe-timeout", "0.5"],
    ).start()
    try:
        calls = 60
        caller = sipp_lab.caller(proxy.hostport, rate=20, calls=calls, call_ms=300)
        result = caller.run()
        report = routing_report([slow, fast], caller.call_ids())
        slow_calls = {cid: call for cid, call in slow.calls().items() if "INVITE" in call.requests}
        print(f"\nparallel forking: {report.per_gateway}, {result.summary()}")

        problems = dispatch_problems(result, report, calls=calls, even_split=False)
        assert not problems, "\n".join(problems)
        assert report.per_gateway == {"slow": 0, "fast": calls}  # the 2xx won every time
        # Every call forked to the slow gateway too, and that branch was cancelled there.
        assert set(slow_calls) == caller.call_ids()
        for cid, call in slow_calls.items():
            assert call.requests[:3] == ["INVITE", "CANCEL", "ACK"], (cid, call)
            assert (487, "INVITE") in call.responses, (cid, call)
            assert (200, "CANCEL") in call.responses, (cid, call)
            assert "BYE" not in call.requests
        assert proxy.destination(slow.uri)["state"] == "AP"  # a 487 says nothing bad
    finally:
        proxy.stop()
