"""One test's Asterisk boxes, sipp callers and carriers, and proxy, stopped by PID at the end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asteriskbox import Account, AsteriskBox
from baresipua import Baresip
from linphoneua import Linphonec
from sipdispatchproc import SipdispatchProxy

from sipphelpers import CallerResult, SippCaller, SippLab

#: the account sipp callers use (sipp's scenarios send From: sipp, Asterisk identifies by it)
SIPP_ACCOUNT = Account("sipp", "sipp-s3cret")


class AsteriskLab:
    """Boxes get 127.0.0.21, .22, ... in creation order; sipp carriers 127.0.0.31, .32, ..."""

    def __init__(self, prefix: Path, workdir: Path) -> None:
        self.prefix = prefix
        self.workdir = workdir
        self.boxes: list[AsteriskBox] = []
        self.sipp = SippLab(workdir / "sipp", first_gateway_host=31)
        self.proxies: list[SipdispatchProxy] = []
        # user agents a test started: stopped at the end
        self.owned_phones: list[Baresip | Linphonec] = []

    def box(
        self,
        name: str | None = None,
        *,
        callers: Sequence[Account] = (SIPP_ACCOUNT,),
        queues: dict[str, Sequence[Account]] | None = None,
        sip_debug: bool = False,
    ) -> AsteriskBox:
        """A box, configured but not started (its address and port are fixed now)."""
        index = len(self.boxes)
        box = AsteriskBox(
            self.prefix,
            self.workdir,
            name or f"ast{index + 1}",
            f"127.0.0.{21 + index}",
            callers=callers,
            queues=queues,
            rtp_base=30000 + 1000 * index,
            sip_debug=sip_debug,
        )
        self.boxes.append(box)
        return box

    def proxy(self, config_text: str, extra_args: Sequence[str] = ()) -> SipdispatchProxy:
        """The proxy on 127.0.0.1 from a YAML table (started)."""
        proxy = SipdispatchProxy(
            self.workdir / f"proxy{len(self.proxies) + 1}",
            [],
            config_text=config_text,
            extra_args=extra_args,
        )
        self.proxies.append(proxy)
        return proxy.start()

    def start_boxes(self, proxy: SipdispatchProxy, boxes: Sequence[AsteriskBox] = ()) -> None:
        for box in boxes or self.boxes:
            box.start(proxy.hostport)

    def sipp_calls(
        self,
        proxy: SipdispatchProxy,
        calls: int,
        *,
        number: str = "1000",
        call_ms: int = 1000,
        rate: float = 10.0,
        transport: Any = "udp",
    ) -> tuple[SippCaller, CallerResult]:
        """``calls`` calls from sipp through the proxy, authenticated by Asterisk (401, then
        the INVITE again with credentials)."""
        caller = self.sipp.caller(
            proxy.hostport,
            scenario="uac_asterisk",
            transport=transport,
            rate=rate,
            calls=calls,
            call_ms=call_ms,
            recv_timeout_ms=10_000,
            extra_args=["-s", number, "-au", SIPP_ACCOUNT.name, "-ap", SIPP_ACCOUNT.password],
        )
        return caller, caller.run()

    def taken_by(self, call_ids: set[str], timeout: float = 15.0) -> dict[str, list[str]]:
        """Which box's CDR records each Call-ID as answered: box name -> Call-IDs. Waits until
        every call is in some CDR (a CDR is written when its call ends)."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, list[str]] = {box.name: [] for box in self.boxes}
            for box in self.boxes:
                for row in box.cdrs():
                    if row.userfield in call_ids and row.disposition == "ANSWERED":
                        found[box.name].append(row.userfield)
            if sum(len(v) for v in found.values()) >= len(call_ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.3)

    def box_of_call(self, call_id: str, timeout: float = 10.0) -> AsteriskBox:
        """The box that received that call's INVITE (from its SIP log: ``sip_debug``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for box in self.boxes:
                if box.has_call(call_id):
                    return box
            time.sleep(0.2)
        raise AssertionError(f"no box logged call {call_id}")

    def call_from(
        self, user: str, skip: set[str] | None = None, timeout: float = 10.0
    ) -> tuple[AsteriskBox, str]:
        """The box that received a call from ``user`` (its From) whose Call-ID is not in
        ``skip``, and that Call-ID (``sip_debug``): for user agents that do not report it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for box in self.boxes:
                for call_id in box.calls_from(user):
                    if call_id not in (skip or set()):
                        return box, call_id
            time.sleep(0.2)
        raise AssertionError(f"no box logged a call from {user}")

    def close(self) -> None:
        for phone in self.owned_phones:
            phone.stop()
        for proxy in self.proxies:
            proxy.stop()
        self.sipp.close()
        for box in self.boxes:
            box.close()


def duplicates(taken: dict[str, list[str]]) -> list[str]:
    """Call-IDs recorded by more than one box, or twice by one."""
    counts = Counter(cid for cids in taken.values() for cid in cids)
    return sorted(cid for cid, n in counts.items() if n > 1)
