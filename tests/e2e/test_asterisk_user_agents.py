"""Real user agents through the proxy to real Asterisk boxes, over UDP and TCP.

baresip and linphone each call (Asterisk challenges it), put the call on hold and take it back
(two re-INVITEs), and hang up; a second call is hung up by Asterisk (its BYE crosses the proxy
the other way). sipsak sends OPTIONS through the proxy. Each step is checked on both ends: the user
agent's own events and the SIP messages Asterisk logged (``[global] debug=yes`` in pjsip.conf).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from asteriskbox import Account
from asterisklab import AsteriskLab
from baresipua import Baresip
from linphoneua import Linphonec

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


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_linphone_calls_holds_resumes_and_hangs_up(
    asterisk_lab: AsteriskLab, transport: str
) -> None:
    lab = asterisk_lab
    for _ in range(2):
        lab.box(callers=[ALICE], sip_debug=True)
    proxy = lab.proxy(table(lab))
    lab.start_boxes(proxy)
    phone = Linphonec(
        lab.workdir / "phones",
        ALICE.name,
        ALICE.password,
        "127.0.0.62",
        f"sip:{proxy.hostport};transport={transport}",
    )
    lab.owned_phones.append(phone)
    phone.start()

    # call 1: the caller holds, resumes and hangs up
    mark = phone.command(f"call sip:1000@{proxy.hostport}")
    call = phone.wait_line(r"assigned id (\d+)", 10, mark)[1]
    phone.wait_line(rf"Media streams established .* for call {call}\b", 15, mark)
    box, call_id = lab.call_from(ALICE.name)
    mark = phone.command(f"pause {call}")
    paused = phone.wait_line(rf"Call {call} with .* is now paused", 10, mark)[0]
    mark = phone.command(f"resume {call}")
    phone.wait_line(rf"Resuming call {call} with", 10, mark)
    # linphone reports a resumed call as its media streams established again
    resumed = phone.wait_line(rf"Media streams established .* for call {call}\b", 10, mark)[0]
    # the INVITE, its retry with credentials, hold and resume: all answered by Asterisk
    box.wait_sip(call_id, "INVITE", count=4, answered=True)
    mark = phone.command(f"terminate {call}")
    ended = phone.wait_line(rf"Call {call} with .* ended", 10, mark)[0]
    box.wait_sip(call_id, "BYE", count=1, answered=True)
    invites = box.sip_requests(call_id, "INVITE")
    challenged = [m for m in invites[:1] if "Authorization:" not in m]
    holds = [m for m in invites[2:] if "a=sendonly" in m]
    # linphone resumes with no direction attribute: sendrecv, the SDP default (RFC 4566)
    held = re.compile(r"^a=(sendonly|recvonly|inactive)", re.M)
    resumes = [m for m in invites[3:] if not held.search(m)]
    # every request of the call crossed the proxy from linphone (all but the proxy's own ACK
    # of the 401), and the dialog was set up over ``transport``
    requests = [
        m
        for d, m in box.sip_messages()
        if d == "in" and f"Call-ID: {call_id}" in m and not m.startswith("SIP/2.0")
    ]
    phone_via = re.compile(r"^Via: SIP/2\.0/(\w+) 127\.0\.0\.62:", re.M)
    from_phone = [match[1] for m in requests if (match := phone_via.search(m))]
    setup = [match[1] for m in invites[:2] if (match := phone_via.search(m))]

    # call 2: Asterisk hangs up (extension 7000 answers, waits 2 s, hangs up)
    mark = phone.command(f"call sip:7000@{proxy.hostport}")
    second = phone.wait_line(r"assigned id (\d+)", 10, mark)[1]
    phone.wait_line(rf"Media streams established .* for call {second}\b", 15, mark)
    box2, call_id2 = lab.call_from(ALICE.name, skip={call_id})
    closed = phone.wait_line(rf"Call {second} with .* ended", 15, mark)[0]
    sent_bye = box2.sip_sent(call_id2, "BYE")
    print(
        f"\nlinphone over {transport}: call 1 on {box.name}: requests {len(requests)}, from "
        f"linphone {len(from_phone)} (set up over {setup}, in the dialog over "
        f"{sorted(set(from_phone[2:]))}); INVITEs {len(invites)} (first without credentials "
        f"{len(challenged)}), hold re-INVITEs {len(holds)} ({paused!r}), resume re-INVITEs "
        f"{len(resumes)} ({resumed!r}), BYE from the caller answered ({ended!r}); call 2 on "
        f"{box2.name}: Asterisk's BYE sent {len(sent_bye)} ({closed!r})"
    )
    assert len(challenged) == 1
    assert len(holds) == 1
    assert len(resumes) == 1
    assert len(sent_bye) == 1
    assert setup == [transport.upper()] * 2
    assert len(from_phone) == len(requests) - 1
    # A TCP call to a UDP Asterisk is record-routed twice (RFC 5658): Asterisk keeps the UDP
    # route on its side, linphone gets the TCP one and sends the dialog's requests over TCP
    assert set(from_phone[2:]) == {transport.upper()}
