"""DNS names: which question a destination asks, the table its answers make, the schedule."""

from __future__ import annotations

import pytest

from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.names import (
    Answer,
    NameQuery,
    NameState,
    RefreshPolicy,
    ResolvedAddress,
    expand,
    next_refresh,
    queries,
    query_for,
)
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig


def table(*uris: str, algorithm: str = "weight", **kw: object) -> TableConfig:
    dests = tuple(Destination.create(1, uri, **kw) for uri in uris)  # type: ignore[arg-type]
    return TableConfig((SetConfig(1, dests, algorithm=algorithm),))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:10.0.0.1:5060", None),
        ("sip:[::1]", None),
        ("sip:gw.example.com:5070", NameQuery("gw.example.com", 5070, "udp", False)),
        ("sip:GW.example.com.", NameQuery("gw.example.com", None, "udp", False)),
        ("sip:gw.example.com;transport=tcp", NameQuery("gw.example.com", None, "tcp", False)),
        ("sips:gw.example.com", NameQuery("gw.example.com", None, "tls", True)),
    ],
)
def test_a_destination_asks_for_srv_only_without_a_port(
    uri: str, expected: NameQuery | None
) -> None:
    assert query_for(Destination.create(1, uri)) == expected


def test_the_srv_service_follows_transport_and_scheme() -> None:
    assert NameQuery("a.test", None, "udp", False).service == "_sip._udp.a.test"
    assert NameQuery("a.test", None, "tcp", False).service == "_sip._tcp.a.test"
    assert NameQuery("a.test", None, "tls", False).service == "_sip._tcp.a.test"
    assert NameQuery("a.test", None, "tls", True).service == "_sips._tcp.a.test"
    assert NameQuery("a.test", None, "udp", False).fallback_port == 5060
    assert NameQuery("a.test", None, "tls", True).fallback_port == 5061
    assert NameQuery("a.test", 5080, "udp", False).fallback_port == 5080


def test_srv_answers_become_targets_with_their_priority_and_weight() -> None:
    config = table("sip:svc.test", "sip:10.0.0.9", priority=5)
    query = next(iter(queries(config)))
    answer = Answer(
        (
            ResolvedAddress("127.0.0.4", 5070, 10, 3),
            ResolvedAddress("127.0.0.5", 5080, 10, 1),
            ResolvedAddress("::1", 5090, 20, 0),
        ),
        expires_at=30.0,
    )
    expanded, names = expand(config, {query: answer})
    dests = expanded.sets[0].destinations
    assert [(d.uri, d.priority, d.weight, d.name) for d in dests] == [
        ("sip:127.0.0.4:5070;transport=udp", -5, 3, "sip:svc.test"),
        ("sip:127.0.0.5:5080;transport=udp", -5, 1, "sip:svc.test"),
        ("sip:[::1]:5090;transport=udp", -15, 1, "sip:svc.test"),
        ("sip:10.0.0.9", 5, 1, None),
    ]
    assert [d.host for d in dests[:3]] == ["127.0.0.4", "127.0.0.5", "::1"]
    (status,) = names
    assert status.state is NameState.RESOLVED
    assert status.addresses == tuple(d.key.partition(":")[2] for d in dests[:3])
    # the expanded table is a table like any other
    live = DestinationTable.build(expanded, None, 0.0, names=names)
    assert len(live.sets[1].targets) == 4
    assert live.names == names
    # set-state names an address however it is spelled
    live.set_state(1, "SIP:[0:0::1]:5090", "dx", 1.0)
    assert live.find(1, "sip:[::1]:5090;transport=udp").runtime.health.code == "DX"


def test_a_zero_srv_weight_beside_others_stays_zero() -> None:
    config = table("sip:svc.test")
    query = next(iter(queries(config)))
    answer = Answer(
        (ResolvedAddress("127.0.0.4", 5070, 0, 5), ResolvedAddress("127.0.0.5", 5070, 0, 0)),
        expires_at=30.0,
    )
    dests = expand(config, {query: answer})[0].sets[0].destinations
    assert [d.weight for d in dests] == [5, 0]


def test_address_answers_take_the_destinations_own_weight_and_keep_user() -> None:
    config = table("sip:alice@gw.test:5070", weight=4)
    query = next(iter(queries(config)))
    answer = Answer((ResolvedAddress("127.0.0.2", 5070), ResolvedAddress("127.0.0.3", 5070)), 9.0)
    dests = expand(config, {query: answer})[0].sets[0].destinations
    assert [(d.uri, d.weight, d.user) for d in dests] == [
        ("sip:alice@127.0.0.2:5070;transport=udp", 4, "alice"),
        ("sip:alice@127.0.0.3:5070;transport=udp", 4, "alice"),
    ]


def test_an_address_reached_twice_is_kept_once_for_the_first() -> None:
    config = table("sip:127.0.0.2:5070", "sip:gw.test:5070")
    query = next(iter(queries(config)))
    answer = Answer((ResolvedAddress("127.0.0.2", 5070), ResolvedAddress("127.0.0.3", 5070)), 9.0)
    expanded, (status,) = expand(config, {query: answer})
    assert [d.name for d in expanded.sets[0].destinations] == [None, "sip:gw.test:5070"]
    assert status.addresses == ("sip:127.0.0.3:5070;transport=udp",)


def test_a_name_without_addresses_takes_no_calls_and_says_why() -> None:
    config = table("sip:nx.test:5060", "sip:gw.test:5060")
    by_name = {q.name: q for q in queries(config)}
    failed = Answer((), expires_at=0.0, error="NXDOMAIN")
    expanded, names = expand(config, {by_name["nx.test"]: failed})
    assert expanded.sets[0].destinations == ()
    assert [(n.uri, n.state, n.reason) for n in names] == [
        ("sip:nx.test:5060", NameState.FAILED, "NXDOMAIN"),
        ("sip:gw.test:5060", NameState.PENDING, "not resolved yet"),
    ]


def test_stale_addresses_keep_serving_and_show_the_error() -> None:
    config = table("sip:gw.test:5060")
    query = next(iter(queries(config)))
    stale = Answer((ResolvedAddress("127.0.0.2", 5060),), 10.0, error="timeout", resolved_at=1)
    expanded, (status,) = expand(config, {query: stale})
    assert len(expanded.sets[0].destinations) == 1
    assert (status.state, status.reason) == (NameState.STALE, "timeout")


@pytest.mark.parametrize(
    ("expires_in", "error", "due_in"),
    [
        (30.0, "", 30.0),  # the TTL
        (0.0, "", 5.0),  # never below the floor
        (86400.0, "", 3600.0),  # never above the ceiling
        (30.0, "timeout", 5.0),  # a failure is tried again after the floor
    ],
)
def test_refresh_when_the_ttl_runs_out_within_floor_and_ceiling(
    expires_in: float, error: str, due_in: float
) -> None:
    now = 1000.0
    answer = Answer((ResolvedAddress("127.0.0.2", 5060),), now + expires_in, error=error)
    assert next_refresh(answer, now, RefreshPolicy(floor=5.0, ceiling=3600.0)) == now + due_in
