"""Signed routes bound to now and to the table, and a key rotation under calls, with real sipp
callers and gateways and real proxy processes on loopback.

* A gateway that leaves the table takes its dialogs' in-dialog requests with it (404), while a
  draining one keeps them; a route older than the dialog lifetime is refused (403). Both are
  counted by reason in ``/metrics``.
* Two replicas share one key file and one advertised address; every call is set up through
  one and ended through the other. The key is rotated in three steps while 20 calls/s of long
  calls run: no BYE is refused.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy

from sipdispatch.proxy.routekeys import fingerprint
from sipphelpers import SippCaller, SippLab, free_port, scenario_path

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

OLD_KEY, NEW_KEY = "o" * 40, "n" * 40
REFUSED = "sipdispatch_routes_refused_total"


def bye_answers(caller: SippCaller) -> dict[str, int]:
    """Per Call-ID, the final status the caller got to the BYE of its scenario (CSeq 2; sipp
    sends one more, unrouted, when that one fails)."""
    return {
        m.call_id: m.status or 0
        for m in caller.messages()
        if m.direction == "R" and m.cseq == 2 and m.cseq_method == "BYE" and (m.status or 0) >= 200
    }


def keys_in_use(proxy: SipdispatchProxy) -> tuple[str, ...]:
    """The keys ``proxy`` checks routes with, signing key first, from ``sipdispatch_route_keys``
    (by fingerprint, which the test maps back to its keys)."""
    by_fingerprint = {fingerprint(key.encode()): key for key in (OLD_KEY, NEW_KEY)}
    uses = {}
    for line in proxy.metrics().splitlines():
        if line.startswith("sipdispatch_route_keys{") and line.endswith(" 1.0"):
            labels = dict(
                part.split("=") for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            uses[by_fingerprint[labels["fingerprint"].strip('"')]] = labels["use"].strip('"')
    return tuple(sorted(uses, key=lambda key: uses[key] != "signing"))


def wait_for_answers(caller: SippCaller, calls: int, within: float = 10.0) -> None:
    """Until every call of ``caller`` is answered (it is then in its pause, before the BYE)."""
    deadline = time.monotonic() + within
    while len(caller.answer_delays()) < calls:
        assert time.monotonic() < deadline, f"only {len(caller.answer_delays())} calls answered"
        time.sleep(0.1)


def test_a_gateway_that_left_the_table_gets_no_more_requests_a_draining_one_does(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gone, draining = sipp_lab.gateway("gone"), sipp_lab.gateway("draining")
    proxy = SipdispatchProxy(tmp_path / "proxy", [gone, draining]).start()
    proxies.append(proxy)
    caller = sipp_lab.caller(proxy.hostport, rate=10, calls=10, call_ms=4000).start()
    wait_for_answers(caller, 10)

    proxy.table.write_text(f"1 {draining.uri}\n")
    assert proxy.ctl("reload").returncode == 0
    assert proxy.ctl("set-state", "dr", "1", draining.uri).returncode == 0
    caller.wait()

    answered_by = {
        call_id: name
        for name, gateway in (("gone", gone), ("draining", draining))
        for call_id, call in gateway.calls().items()
        if call.answered
    }
    expected = {call_id: 404 if name == "gone" else 200 for call_id, name in answered_by.items()}
    assert bye_answers(caller) == expected
    assert Counter(answered_by.values()) == {"gone": 5, "draining": 5}
    assert not any(call.got_bye for call in gone.calls().values())
    assert proxy.metric(f'{REFUSED}{{reason="gone"}}') == 5
    assert proxy.metric(f'{REFUSED}{{reason="expired"}}') == 0


def test_a_route_past_the_dialog_lifetime_is_refused_and_counted(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gateway = sipp_lab.gateway("gw")
    proxy = SipdispatchProxy(
        tmp_path / "proxy", [gateway], extra_args=["--dialog-lifetime", "3"]
    ).start()
    proxies.append(proxy)
    short = sipp_lab.caller(proxy.hostport, rate=10, calls=5, call_ms=500)
    long = sipp_lab.caller(proxy.hostport, rate=10, calls=5, call_ms=5000)

    short.start()
    long.start()
    short.wait()
    long.wait()

    assert set(bye_answers(short).values()) == {200}
    assert bye_answers(long) == dict.fromkeys(long.call_ids(), 403)
    assert not any(gateway.calls()[call_id].got_bye for call_id in long.call_ids())
    assert proxy.metric(f'{REFUSED}{{reason="expired"}}') == 5
    assert "Route has expired" in proxy.log()


def ending_through(other: SipdispatchProxy, workdir: Path) -> Path:
    """The test caller's scenario with its ACK and BYE sent to ``other`` (sipp's setdest), as
    a Service spreads a dialog's requests over the replicas."""
    text = scenario_path("uac").read_text()
    answered = '<recv response="200" rrs="true" rtd="answer">\n  </recv>\n'
    assert answered in text
    setdest = (
        f'  <nop><action><setdest host="{other.ip}" port="{other.port}" protocol="udp"/>'
        "</action></nop>\n"
    )
    path = workdir / f"uac-ending-through-{other.port}.xml"
    path.write_text(text.replace(answered, answered + setdest))
    return path


def test_a_key_rotation_under_20_calls_per_second_loses_no_bye(
    sipp_lab: SippLab, proxies: list[SipdispatchProxy], tmp_path: Path
) -> None:
    gw1, gw2 = sipp_lab.gateway("gw1"), sipp_lab.gateway("gw2")
    keys = tmp_path / "route-keys"
    keys.write_text(f"{OLD_KEY}\n")
    # Both replicas Record-Route with one service address, as behind a Kubernetes Service.
    args = ["--secret-file", str(keys), "--advertise", f"127.0.0.1:{free_port()}"]
    first = SipdispatchProxy(tmp_path / "first", [gw1, gw2], extra_args=args).start()
    proxies.append(first)
    second = SipdispatchProxy(tmp_path / "second", [gw1, gw2], extra_args=args).start()
    proxies.append(second)
    # Every call is set up through one replica and ended through the other.
    callers = [
        sipp_lab.caller(
            start.hostport,
            rate=10,
            calls=260,
            call_ms=4000,
            scenario=ending_through(end, tmp_path),
        ).start()
        for start, end in ((first, second), (second, first))
    ]

    def step(keys_in_order: tuple[str, ...], at: float, started: float) -> None:
        """Write the key file at ``at`` s into the run; return once both replicas use it, as
        their ``/metrics`` show it."""
        time.sleep(max(0.0, started + at - time.monotonic()))
        keys.write_text("".join(f"{key}\n" for key in keys_in_order))
        deadline = time.monotonic() + 10
        while any(keys_in_use(proxy) != keys_in_order for proxy in (first, second)):
            assert time.monotonic() < deadline, "a replica did not apply the key file"
            time.sleep(0.1)

    assert keys_in_use(first) == keys_in_use(second) == (OLD_KEY,)
    started = time.monotonic()
    step((OLD_KEY, NEW_KEY), 4.0, started)  # 1. the new key, accepted everywhere
    step((NEW_KEY, OLD_KEY), 8.0, started)  # 2. signing with it; the old one accepted
    # 3. once every call signed with the old key ended (4 s calls): the old key goes
    step((NEW_KEY,), 17.0, started)
    results = [caller.wait() for caller in callers]
    print(
        f"key rotation: {sum(r.successful for r in results)} calls at 20 calls/s, "
        f"BYE answers {Counter(s for c in callers for s in bye_answers(c).values())}"
    )

    for caller, result in zip(callers, results, strict=True):
        assert result.failed == 0, result.summary()
        assert result.successful == 260, result.summary()
        assert bye_answers(caller) == dict.fromkeys(caller.call_ids(), 200)
    for proxy in (first, second):
        assert proxy.metric(REFUSED) == 0, proxy.log()[-3000:]
        assert proxy.log().count("route keys reloaded") == 3
