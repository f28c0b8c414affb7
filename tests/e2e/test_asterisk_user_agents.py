"""Real user agents through the proxy to real Asterisk boxes, over UDP and TCP.

baresip calls (Asterisk challenges it), puts the call on hold and takes it back (two
re-INVITEs), and hangs up; a second call is hung up by Asterisk (its BYE crosses the proxy the
other way). sipsak sends OPTIONS through the proxy. Each step is checked on both ends: the user
agent's own events and the SIP messages Asterisk logged (``[global] debug=yes`` in pjsip.conf).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from asteriskbox import Account
from asterisklab import AsteriskLab
from baresipua import Baresip

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

ALICE = Account("alice", "alice-pw-1")


def table(lab: AsteriskLab) -> str:
    destinations = "".join(f'      - uri: "{box.uri}"\n' for box in lab.boxes)
    return f"sets:\n  - id: 1\n    destinations:\n{destinations}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_calls_holds_resumes_and_hangs_up(
    asterisk_lab: AsteriskLab, transport: str
) -> None:
    lab = asterisk_lab
    for _ in range(2):
        lab.box(callers=[ALICE], sip_debug=True)
    proxy = lab.proxy(table(lab))
    lab.start_boxes(proxy)
    target = f"{proxy.hostport};transport={transport}"
    phone = Baresip(
        lab.workdir / "phones",
        "alice",
        "127.0.0.61",
        f"<sip:alice@{target}>;auth_pass={ALICE.password};regint=0",
    )
    lab.owned_phones.append(phone)
    phone.start()

    # call 1: the caller holds, resumes and hangs up
    mark = len(phone.events)
    phone.command("dial", f"sip:1000@{proxy.hostport}")
    established = phone.wait_event("CALL_ESTABLISHED", 15, mark)
    call_id = str(established.get("id", ""))
    box = lab.box_of_call(call_id)
    phone.command("hold")
    phone.command("resume")
    # the INVITE, its retry with credentials, hold and resume: all answered by Asterisk
    box.wait_sip(call_id, "INVITE", count=4, answered=True)
    phone.command("hangup")
    phone.wait_event("CALL_CLOSED", 10, mark)
    box.wait_sip(call_id, "BYE", count=1, answered=True)
    reinvites = box.sip_requests(call_id, "INVITE")
    holds = [m for m in reinvites[2:] if "a=sendonly" in m]
    resumes = [m for m in reinvites[3:] if "a=sendrecv" in m]

    # call 2: Asterisk hangs up (extension 7000 answers, waits 2 s, hangs up)
    mark2 = len(phone.events)
    phone.command("dial", f"sip:7000@{proxy.hostport}")
    second = phone.wait_event("CALL_ESTABLISHED", 15, mark2)
    closed = phone.wait_event("CALL_CLOSED", 15, mark2)
    box2 = lab.box_of_call(str(second.get("id", "")))
    sent_bye = box2.sip_sent(str(second.get("id", "")), "BYE")
    print(
        f"\nbaresip over {transport}: call 1 on {box.name}: INVITE twice (401, then "
        f"credentials), hold re-INVITEs {len(holds)}, resume re-INVITEs {len(resumes)}, BYE "
        f"from the caller answered; call 2 on {box2.name}: Asterisk's BYE sent {len(sent_bye)}, "
        f"baresip closed it ({closed.get('param', '')})"
    )
    assert len(holds) == 1
    assert len(resumes) == 1
    assert len(sent_bye) == 1


def test_sipsak_options_through_the_proxy(asterisk_lab: AsteriskLab) -> None:
    sipsak = shutil.which("sipsak")
    assert sipsak, "sipsak not installed: hack/bootstrap --with-tests installs it"
    lab = asterisk_lab
    for _ in range(2):
        lab.box(callers=[ALICE])
    proxy = lab.proxy(table(lab))
    lab.start_boxes(proxy)
    answers = {}
    for transport in ("udp", "tcp"):
        done = subprocess.run(
            [sipsak, "-vv", "-s", f"sip:1000@{proxy.hostport}", "-E", transport, "-l", "0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        answers[transport] = (done.returncode, done.stdout)
    servers = {
        t: [line for line in out.splitlines() if "Server:" in line]
        for t, (_, out) in answers.items()
    }
    print(
        "\nsipsak OPTIONS through the proxy: exit codes "
        f"{[a[0] for a in answers.values()]}; {servers}"
    )
    for transport, (code, out) in answers.items():
        assert code == 0, f"{transport}: {out}"
        assert "200 OK" in out
