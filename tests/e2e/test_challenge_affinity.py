"""Digest challenges behind round-robin: the retry reaches the gateway that issued the nonce.

Two Kamailio instances authenticate every INVITE, each with nonces of its own (an Asterisk
cluster does the same), behind the proxy's default algorithm, round-robin. A sipp caller
answers each 401 with credentials over its nonce, in a new INVITE with the same Call-ID. With
challenge affinity every call succeeds and each gateway's log shows it answered the calls it
challenged; without it, a retry taken to the other instance is challenged again and fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kamailiogateway import KamailioAuthGateway
from sipdispatchproc import SipdispatchProxy

from sipphelpers import SippLab

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

PASSWORD = "s3cret"


def auth_calls(sipp_lab: SippLab, proxy: SipdispatchProxy, calls: int) -> tuple[int, set[str]]:
    caller = sipp_lab.caller(
        proxy.hostport,
        scenario="uac_auth",
        rate=20,
        calls=calls,
        call_ms=100,
        recv_timeout_ms=3000,
        extra_args=["-s", "1000", "-au", "alice", "-ap", PASSWORD],
    )
    result = caller.run()
    return result.successful, caller.call_ids()


def test_100_of_100_digest_calls_succeed_behind_round_robin(
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    proxy_build: list[str] | None,
) -> None:
    gateways = [
        KamailioAuthGateway(tmp_path / "gateways", f"auth{i}", f"127.0.0.{i + 1}", PASSWORD)
        for i in (1, 2)
    ]
    try:
        for gateway in gateways:
            gateway.start()
        table = "".join(f"1 {gw.uri}\n" for gw in gateways)
        proxy = SipdispatchProxy(
            tmp_path / "proxy", [], table_text=table, command=proxy_build
        ).start()
        proxies.append(proxy)

        successful, call_ids = auth_calls(sipp_lab, proxy, 100)

        assert successful == 100
        events = [gateway.events() for gateway in gateways]
        answered = [sum(e["ANSWER"] for e in seen.values()) for seen in events]
        assert sum(answered) == 100
        assert min(answered) >= 40  # still round-robin for new calls
        for call_id in call_ids:
            (at,) = [seen[call_id] for seen in events if call_id in seen]  # one gateway only
            assert (at["CHALLENGE"], at["ANSWER"], at["BYE"]) == (1, 1, 1), call_id

        # The same without challenge affinity: retries land on the other instance.
        without = SipdispatchProxy(
            tmp_path / "without",
            [],
            table_text=table,
            extra_args=["--challenge-affinity-size", "0"],
            command=proxy_build,
        ).start()
        proxies.append(without)
        successful, call_ids = auth_calls(sipp_lab, without, 20)
        print(f"without challenge affinity: {successful} of 20 calls succeeded")
        assert successful < 20
    finally:
        for gateway in gateways:
            gateway.stop()
