"""The resolver against a real DNS server (dnsmasq on loopback): RFC 3263 steps, TTLs, the
reasons of failures, and the name book's policy for them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsserver import Dnsmasq, dnsmasq_available
from sipdispatch.dispatch.names import NameQuery, NameState, RefreshPolicy, ResolvedAddress
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig
from sipdispatch.proxy.namebook import NameBook
from sipdispatch.proxy.resolver import Resolver, parse_server

pytestmark = pytest.mark.skipif(not dnsmasq_available(), reason="needs dnsmasq (hack/bootstrap)")


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, ttl=7)
    server.write(
        hosts=[
            ("127.0.0.2", "gw.test"),
            ("127.0.0.3", "gw.test"),
            ("::1", "gw.test"),
            ("127.0.0.4", "a.test"),
            ("127.0.0.5", "b.test"),
        ],
        srv=[
            ("_sip._udp.svc.test", "a.test", 5070, 10, 3),
            ("_sip._udp.svc.test", "b.test", 5080, 10, 1),
            ("_sip._tcp.svc.test", "b.test", 5090, 0, 0),
            ("_sip._udp.dangling.test", "nowhere.test", 5070, 0, 0),
        ],
    )
    server.start()
    yield server
    server.stop()


def resolver(dns: Dnsmasq, timeout: float = 2.0) -> Resolver:
    return Resolver([parse_server(dns.server)], timeout)


async def test_a_name_with_a_port_gives_its_a_and_aaaa_records(dns: Dnsmasq) -> None:
    outcome = await resolver(dns).resolve(NameQuery("gw.test", 5070, "udp", False))
    assert outcome.error == ""
    assert sorted((a.host, a.port) for a in outcome.addresses) == [
        ("127.0.0.2", 5070),
        ("127.0.0.3", 5070),
        ("::1", 5070),
    ]
    assert outcome.ttl == 7


async def test_a_name_without_a_port_asks_srv_by_transport(dns: Dnsmasq) -> None:
    udp = await resolver(dns).resolve(NameQuery("svc.test", None, "udp", False))
    assert sorted(udp.addresses, key=lambda a: a.host) == [
        ResolvedAddress("127.0.0.4", 5070, 10, 3),
        ResolvedAddress("127.0.0.5", 5080, 10, 1),
    ]
    tcp = await resolver(dns).resolve(NameQuery("svc.test", None, "tcp", False))
    assert tcp.addresses == (ResolvedAddress("127.0.0.5", 5090, 0, 0),)


async def test_no_srv_falls_back_to_addresses_at_the_default_port(dns: Dnsmasq) -> None:
    outcome = await resolver(dns).resolve(NameQuery("gw.test", None, "tls", False))
    assert {(a.host, a.port, a.srv_weight) for a in outcome.addresses} == {
        ("127.0.0.2", 5061, None),
        ("127.0.0.3", 5061, None),
        ("::1", 5061, None),
    }


async def test_failures_say_why(dns: Dnsmasq) -> None:
    nx = await resolver(dns).resolve(NameQuery("nx.test", 5060, "udp", False))
    assert (nx.addresses, nx.error, nx.definitive) == ((), "NXDOMAIN", True)
    dangling = await resolver(dns).resolve(NameQuery("dangling.test", None, "udp", False))
    assert dangling.addresses == ()
    assert dangling.error == "nowhere.test.: NXDOMAIN"
    dns.stop()
    timeout = await resolver(dns, timeout=0.3).resolve(NameQuery("gw.test", 5060, "udp", False))
    assert (timeout.error, timeout.definitive) == ("timeout", False)


async def test_the_book_keeps_the_last_addresses_through_a_timeout_not_an_nxdomain(
    dns: Dnsmasq,
) -> None:
    now = [100.0]
    book = NameBook(resolver(dns, timeout=0.3), lambda: now[0], RefreshPolicy(5, 60, 30))
    config = TableConfig((SetConfig(1, (Destination.create(1, "sip:gw.test:5060"),)),))
    await book.resolve_new(config)
    (query,) = book.answers
    assert book.answers[query].state is NameState.RESOLVED
    assert book.next_due() == 107.0  # the TTL
    assert not await book.refresh_due()  # not due yet: nothing asked
    dns.stop()
    now[0] = 107.0
    assert await book.refresh_due()  # the error is news
    stale = book.answers[query]
    assert (stale.state, stale.error, len(stale.addresses)) == (NameState.STALE, "timeout", 3)
    assert book.next_due() == 112.0  # failures retried after the floor
    assert len(book.expand(config)[0].sets[0].destinations) == 3
    now[0] = 107.0 + 31  # past max_stale after expiry: dropped
    assert await book.refresh_due()
    assert book.answers[query].state is NameState.FAILED
    draining = book.expand(config)[0].sets[0].destinations
    assert [d.draining for d in draining] == [True] * 3  # no new calls; their dialogs pass
    assert book.next_due() == now[0] + 5  # the floor comes before the drain grace (30)
    # the server back, without the name: NXDOMAIN drops at once, and it shows
    dns.write(hosts=[("127.0.0.4", "a.test")])
    dns.start()
    now[0] += 5
    await book.refresh_due()
    assert (book.answers[query].state, book.answers[query].error) == (NameState.FAILED, "NXDOMAIN")
    now[0] = 107.0 + 31 + 30  # the drain is over
    await book.refresh_due()
    assert book.expand(config)[0].sets[0].destinations == ()
