"""DNS names in the table keeper, against a real DNS server (dnsmasq on loopback): a name
becomes its addresses, a changed answer swaps the table with the health of the addresses that
stayed, and a name that does not resolve shows why (in the listing and the report) and takes
no calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dnsserver import Dnsmasq, dnsmasq_available
from sipdispatch.dispatch import health
from sipdispatch.dispatch.names import RefreshPolicy
from sipdispatch.proxy.control.views import table_view
from sipdispatch.proxy.ctl import format_table
from sipdispatch.proxy.dnsmetrics import watch_names
from sipdispatch.proxy.healthbook import HealthBook
from sipdispatch.proxy.namebook import NameBook
from sipdispatch.proxy.reporting import reported
from sipdispatch.proxy.resolver import Resolver, parse_server
from sipdispatch.proxy.settings import DEFAULTS, probe_settings
from sipdispatch.proxy.tablekeeper import TableKeeper
from sipdispatch.proxy.tables import FileTableSource

pytestmark = pytest.mark.skipif(not dnsmasq_available(), reason="needs dnsmasq (hack/bootstrap)")

CONFIG = """\
sets:
  - id: 1
    algorithm: weight
    destinations:
      - uri: sip:svc.test
      - uri: sip:gw.test:5070
        priority: 50
      - uri: sip:nx.test:5060
"""


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, ttl=1)
    server.write(
        hosts=[
            ("127.0.0.2", "gw.test"),
            ("127.0.0.3", "gw.test"),
            ("127.0.0.4", "a.test"),
            ("127.0.0.5", "b.test"),
        ],
        srv=[
            ("_sip._udp.svc.test", "a.test", 5071, 10, 3),
            ("_sip._udp.svc.test", "b.test", 5072, 10, 1),
        ],
    )
    server.start()
    yield server
    server.stop()


def keeper_for(path: Path, dns: Dnsmasq, now: list[float]) -> TableKeeper:
    book = HealthBook(probe_settings(None, DEFAULTS), clock=lambda: now[0], max_dialog_age=1.0)
    source = FileTableSource(path, kamailio_format=False, algorithm=4, default_set=None)
    names = NameBook(
        Resolver([parse_server(dns.server)], 0.5), lambda: now[0], RefreshPolicy(floor=0.5)
    )
    return TableKeeper(source, DEFAULTS, book, names=names)


async def test_names_become_targets_and_a_changed_answer_keeps_the_others_health(
    tmp_path: Path, dns: Dnsmasq
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    now = [100.0]
    keeper = keeper_for(path, dns, now)
    await keeper.first()
    table = keeper.table
    assert table is not None
    rows = [(t.destination.uri, t.destination.name, t.priority, t.weight) for t in table.targets()]
    assert rows == [
        ("sip:127.0.0.2:5070;transport=udp", "sip:gw.test:5070", 50, 1),
        ("sip:127.0.0.3:5070;transport=udp", "sip:gw.test:5070", 50, 1),
        ("sip:127.0.0.4:5071;transport=udp", "sip:svc.test", -10, 3),
        ("sip:127.0.0.5:5072;transport=udp", "sip:svc.test", -10, 1),
    ]
    # what the operator reads: the name that failed is a row of its own, with the reason
    report = {(r.uri, r.name): (r.state, r.eligible, r.reason) for r in reported(table, 0.0)}
    assert report[("sip:nx.test:5060", "sip:nx.test:5060")] == (
        "IX",
        False,
        "dns: NXDOMAIN (nx.test:5060)",
    )
    assert report[("sip:127.0.0.4:5071;transport=udp", "sip:svc.test")][:2] == ("AP", True)
    # what sipdispatch-ctl list shows
    listing = format_table(table_view(table, now[0], 0.0))
    print("\n" + listing)
    (nx_line,) = [line for line in listing.splitlines() if "nx.test" in line]
    assert nx_line.split()[:4] == ["1", "sip:nx.test:5060", "sip:nx.test:5060", "IX"]
    assert nx_line.endswith("dns: NXDOMAIN (nx.test:5060)")
    view = table_view(table, now[0], 0.0)["sets"][0]["names"]
    assert [(n["uri"], n["state"]) for n in view] == [
        ("sip:svc.test", "resolved"),
        ("sip:gw.test:5070", "resolved"),
        ("sip:nx.test:5060", "failed"),
    ]

    # 127.0.0.2 learns something; then 127.0.0.3 leaves the zone
    kept = next(t for t in table.targets() if t.destination.host == "127.0.0.2")
    health.set_admin_state(kept.runtime.health, "dx", now[0])
    dns.write(
        hosts=[("127.0.0.2", "gw.test"), ("127.0.0.4", "a.test"), ("127.0.0.5", "b.test")],
    )
    dns.reload_hosts()
    await asyncio.sleep(0.2)  # dnsmasq reads the file on SIGHUP
    now[0] += 1.0  # the TTL ran out
    assert keeper.names is not None
    assert await keeper.names.refresh_due()
    assert keeper.loaded is not None
    keeper.apply(keeper.loaded, why="DNS answers changed")
    after = keeper.table
    assert after is not table
    rows = [(t.destination.host, t.runtime.health.code) for t in after.targets()]
    # the SRV targets lost no record; the address that left drains
    assert rows == [
        ("127.0.0.2", "DX"),
        ("127.0.0.3", "DR"),
        ("127.0.0.4", "AP"),
        ("127.0.0.5", "AP"),
    ]
    carried = next(t for t in after.targets() if t.destination.host == "127.0.0.2")
    assert carried.runtime is kept.runtime  # health carried by key
    assert carried.runtime.health.code == "DX"


def test_the_listing_has_a_name_column_only_when_the_table_has_names() -> None:
    latency = {"avg": 0.0, "est": 0.0, "max": 0.0, "timeouts": 0}
    dest = {
        "uri": "sip:10.0.0.1:5060",
        "name": None,
        "state": "AP",
        "priority": 0,
        "weight": 1,
        "activeCalls": 0,
        "latency": latency,
        "reason": "configured",
    }
    plain = format_table({"sets": [{"id": 1, "destinations": [dest], "names": []}]})
    assert plain.splitlines()[0].split()[:3] == ["SET", "URI", "STATE"]
    assert plain.splitlines()[1].split()[:3] == ["1", "sip:10.0.0.1:5060", "AP"]
    name = {"uri": "sip:gw.test", "lookup": "SRV _sip._udp.gw.test", "state": "resolved"}
    named = {**dest, "name": "sip:gw.test"}
    view = {"sets": [{"id": 1, "destinations": [named], "names": [{**name, "addresses": ["x"]}]}]}
    lines = format_table(view).splitlines()
    assert lines[0].split()[:4] == ["SET", "URI", "NAME", "STATE"]
    assert lines[1].split()[:4] == ["1", "sip:10.0.0.1:5060", "sip:gw.test", "AP"]


@pytest.mark.slow
async def test_the_keeper_follows_the_ttl_and_swaps_the_table(tmp_path: Path, dns: Dnsmasq) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("sets: [{id: 1, destinations: [{uri: 'sip:gw.test:5070'}]}]\n")
    loop = asyncio.get_running_loop()
    book = HealthBook(probe_settings(None, DEFAULTS), clock=loop.time, max_dialog_age=1.0)
    source = FileTableSource(path, kamailio_format=False, algorithm=4, default_set=None)
    names = NameBook(
        Resolver([parse_server(dns.server)], 0.5),
        loop.time,
        RefreshPolicy(floor=0.2, drain_grace=0.5),
    )
    keeper = TableKeeper(source, DEFAULTS, book, names=names)
    await keeper.first()
    assert keeper.table is not None
    assert len(list(keeper.table.targets())) == 2
    following = asyncio.create_task(keeper.follow_names(poll=0.1))
    try:
        dns.write(hosts=[("127.0.0.2", "gw.test")])
        dns.reload_hosts()
        start = loop.time()

        def rows() -> list[tuple[str, str]]:
            assert keeper.table is not None
            return [(t.destination.host, t.runtime.health.code) for t in keeper.table.targets()]

        while rows() != [("127.0.0.2", "AP"), ("127.0.0.3", "DR")]:
            assert loop.time() - start < 2.5, rows()  # TTL 1 s + floor + a poll
            await asyncio.sleep(0.05)
        while rows() != [("127.0.0.2", "AP")]:
            assert loop.time() - start < 4.0, rows()  # + the drain grace
            await asyncio.sleep(0.05)
        assert book.table is keeper.table  # the health owner follows each swap
    finally:
        following.cancel()


async def test_names_are_gauges_for_alerts(tmp_path: Path, dns: Dnsmasq) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    now = [100.0]
    keeper = keeper_for(path, dns, now)
    await keeper.first()
    registry = CollectorRegistry()
    watch_names(registry, lambda: keeper.table)
    sample = registry.get_sample_value

    def state(name: str, value: str) -> float | None:
        labels = {"set": "1", "name": name, "state": value}
        return sample("sipdispatch_dns_name_state", labels)

    assert state("sip:nx.test:5060", "failed") == 1.0
    assert state("sip:svc.test", "resolved") == 1.0
    assert state("sip:svc.test", "failed") == 0.0
    assert sample("sipdispatch_dns_name_addresses", {"set": "1", "name": "sip:gw.test:5070"}) == 2.0
