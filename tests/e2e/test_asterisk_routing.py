"""Routing with real Asterisk boxes: their outbound calls reach carriers only, and queue calls
reach the box whose agents serve the queue (and its named fallback when that box is down).

What happened is read from Asterisk itself: its CDR (the SIP Call-ID in the user field) and its
queue log (an agent ``CONNECT`` for each answered queue call), and from the carriers' sipp logs.
"""

from __future__ import annotations

import time

import pytest
from asteriskbox import Account, wait_until
from asterisklab import SIPP_ACCOUNT, AsteriskLab
from baresipua import Baresip

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

PROBING = """\
probing:
  mode: all
  interval: 1
  timeout: 1
  failureThreshold: 2
  successThreshold: 1
"""


def test_asterisk_calls_out_through_the_proxy_to_carriers_only(asterisk_lab: AsteriskLab) -> None:
    lab = asterisk_lab
    boxes = [lab.box() for _ in range(3)]
    carriers = [lab.sipp.gateway(f"carrier{i + 1}") for i in range(2)]
    config = (
        "defaultSet: 1\nsets:\n  - id: 1                  # asterisk\n    destinations:\n"
        + "".join(f'      - uri: "{box.uri}"\n' for box in boxes)
        + "  - id: 2                  # carriers\n    destinations:\n"
        + "".join(f'      - uri: "{gw.uri}"\n' for gw in carriers)
        + "routes:\n"
        '  - name: asterisk-to-carriers\n    match: {source: ["set:1"]}\n    set: 2\n'
        '  - name: callers-to-asterisk\n    match: {source: ["127.0.0.1"]}\n    set: 1\n' + PROBING
    )
    proxy = lab.proxy(config)
    lab.start_boxes(proxy)

    per_box = 4
    for box in boxes:
        for i in range(per_box):
            box.cli(f"channel originate PJSIP/+4930555{i:04d}@proxy application Wait 2")
    total = per_box * len(boxes)

    def carrier_calls() -> dict[str, int]:
        return {
            gw.name: sum(1 for c in gw.calls().values() if c.answered and c.got_bye)
            for gw in carriers
        }

    wait_until(lambda: sum(carrier_calls().values()) >= total, 30, "carriers got every call")
    time.sleep(1)
    reached = carrier_calls()
    placed = {
        box.name: sum(
            1
            for row in box.cdrs()
            if row.channel.startswith("PJSIP/proxy-") and row.disposition == "ANSWERED"
        )
        for box in boxes
    }
    # A call that came back into a box would be an inbound call in context from-proxy, its
    # Call-ID written by the dialplan; the boxes' own outgoing legs have no user field.
    hairpinned = {
        box.name: [row for row in box.cdrs() if row.dcontext == "from-proxy" and row.userfield]
        for box in boxes
    }
    print(
        f"\n{total} calls placed by the boxes ({per_box} each); answered per box by their CDRs "
        f"{placed}; answered and hung up at the carriers {reached}; calls that came back into "
        f"an Asterisk {sum(len(v) for v in hairpinned.values())}"
    )
    assert sum(reached.values()) == total
    assert all(n > 0 for n in reached.values()), reached
    assert placed == {box.name: per_box for box in boxes}
    assert not any(hairpinned.values()), hairpinned


QUEUE_CONFIG = """\
defaultSet: 1
sets:
  - id: 1                      # every box, for ordinary calls
    destinations:
{everyone}
  - id: 10                     # sales: its home box, then its fallback
    algorithm: priority
    destinations:
      - {{uri: "{home_sales}", priority: 10}}
      - {{uri: "{fallback_sales}", priority: 5}}
  - id: 11                     # support: its home box, then its fallback
    algorithm: priority
    destinations:
      - {{uri: "{home_support}", priority: 10}}
      - {{uri: "{fallback_support}", priority: 5}}
routes:
  - name: sales
    match: {{requestUser: "^sales$"}}
    set: 10
  - name: support
    match: {{requestUser: "^support$"}}
    set: 11
"""


def test_queue_calls_reach_the_box_of_their_agents(asterisk_lab: AsteriskLab) -> None:
    """``sales`` lives on ast1 (fallback ast2), ``support`` on ast2 (fallback ast3); each box
    has the agents of the queues it serves, baresip phones answering by themselves."""
    lab = asterisk_lab
    agents = {
        "sales-ast1": Account("sales1"),
        "sales-ast2": Account("sales2"),
        "support-ast2": Account("support2"),
        "support-ast3": Account("support3"),
    }
    ast1 = lab.box(callers=[SIPP_ACCOUNT], queues={"sales": [agents["sales-ast1"]]})
    ast2 = lab.box(
        callers=[SIPP_ACCOUNT],
        queues={"sales": [agents["sales-ast2"]], "support": [agents["support-ast2"]]},
    )
    ast3 = lab.box(callers=[SIPP_ACCOUNT], queues={"support": [agents["support-ast3"]]})
    everyone = "\n".join(f'      - uri: "{box.uri}"' for box in lab.boxes)
    proxy = lab.proxy(
        QUEUE_CONFIG.format(
            everyone=everyone,
            home_sales=ast1.uri,
            fallback_sales=ast2.uri,
            home_support=ast2.uri,
            fallback_support=ast3.uri,
        )
        + PROBING
    )
    lab.start_boxes(proxy)

    # the agents' phones register straight to the box hosting their queue
    phones = []
    for index, (where, account) in enumerate(agents.items()):
        box = {"ast1": ast1, "ast2": ast2, "ast3": ast3}[where.split("-")[1]]
        phone = Baresip(
            lab.workdir / "phones",
            account.name,
            f"127.0.0.{51 + index}",
            f"<sip:{account.name}@{box.hostport}>;auth_pass={account.password};"
            "answermode=auto;regint=60",
        )
        lab.owned_phones.append(phone)
        phones.append(phone.start())
        wait_until(lambda b=box, a=account: b.registered(a.name), 15, f"{account.name} registered")

    def queue_calls(queue: str, calls: int) -> dict[str, list[str]]:
        """Calls to ``queue`` through the proxy; per box, the agents that answered them
        according to its queue log."""
        caller, result = lab.sipp_calls(proxy, calls, number=queue, call_ms=500, rate=1)
        assert result.successful == calls, result.summary()
        taken = lab.taken_by(caller.call_ids())

        def read_logs() -> dict[str, list[str]]:
            connects: dict[str, list[str]] = {}
            for box in lab.boxes:
                cdrs = box.cdrs()
                uniqueids = {row.uniqueid for row in cdrs if row.userfield in taken[box.name]}
                connects[box.name] = [
                    e.agent
                    for e in box.queue_events()
                    if e.event == "CONNECT" and e.queue == queue and e.callid in uniqueids
                ]
            return connects

        # Asterisk writes its CDR and queue log as calls end: give a busy machine a moment.
        deadline = time.monotonic() + 5
        connects = read_logs()
        while sum(map(len, connects.values())) < calls and time.monotonic() < deadline:
            time.sleep(0.2)
            connects = read_logs()
        return connects

    sales = queue_calls("sales", 4)
    support = queue_calls("support", 4)
    ast1.stop()
    wait_until(lambda: proxy.destination(ast1.uri, 10)["state"] == "IP", 10, "ast1 IP")
    sales_down = queue_calls("sales", 4)
    support_down = queue_calls("support", 4)
    print(
        f"\nqueue calls answered by agents (box: agents from its queue log): sales {sales}, "
        f"support {support}; {ast1.name} stopped: sales {sales_down}, support {support_down}"
    )
    assert sales == {"ast1": ["PJSIP/sales1"] * 4, "ast2": [], "ast3": []}
    assert support == {"ast1": [], "ast2": ["PJSIP/support2"] * 4, "ast3": []}
    assert sales_down == {"ast1": [], "ast2": ["PJSIP/sales2"] * 4, "ast3": []}
    assert support_down == support
