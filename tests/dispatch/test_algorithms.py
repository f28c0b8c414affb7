"""Selection algorithms: distribution, stickiness, consistency, failover order."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from dispatchhelpers import Cand, call_ids, cands, ctx, table

from sipdispatch.dispatch import algorithms, context, destinations, health, tableconfig

HASHES = ["hash-callid", "hash-from", "hash-to", "hash-ruri", "hash-auth-user", "hash-key"]


def varied_ctx(i: int) -> context.RequestContext:
    """A request whose every hashable field differs with `i`."""
    return context.RequestContext(
        call_id=f"c{i}@host",
        from_uri=f"sip:caller{i}@example.com",
        to_uri=f"sip:callee{i}@example.com",
        request_uri=f"sip:{1000 + i}@lb.example.com",
        request_uri_user=str(1000 + i),
        auth_username=f"user{i}",
        headers={"X-Queue": f"queue-{i}"},
    )


def selector(name: str) -> algorithms.Selector:
    return algorithms.make_selector(name, hash_key="X-Queue" if name == "hash-key" else None)


# --- registry ----------------------------------------------------------------


def test_every_kamailio_number_and_name_resolves_to_the_same_algorithm() -> None:
    names = list(algorithms.ALGORITHMS)
    assert len(names) == 14
    for number, name in enumerate(names):
        assert algorithms.resolve(number) == name
        assert algorithms.resolve(str(number)) == name
        assert algorithms.resolve(name.upper().replace("-", "_")) == name
        assert algorithms.make_selector(number, hash_key="X-A").number == number


@pytest.mark.parametrize("bad", [14, -1, "fastest", True, ""])
def test_unknown_algorithms_are_rejected_with_the_list(bad: object) -> None:
    with pytest.raises(algorithms.UnknownAlgorithmError, match="4 round-robin"):
        algorithms.resolve(bad)  # type: ignore[arg-type]


def test_hash_key_needs_a_key() -> None:
    with pytest.raises(ValueError, match="hash key"):
        algorithms.make_selector("hash-key")
    with pytest.raises(ValueError, match="not a known URI part"):
        algorithms.make_selector(7, hash_key="ruri.usr")


# --- round-robin ---------------------------------------------------------------


def test_round_robin_is_exactly_even_and_rotates_the_failover_list() -> None:
    candidates = cands(4)
    rr = algorithms.make_selector("round-robin")
    counts: Counter[str] = Counter()
    for i in range(10_000):
        order = rr.order(ctx(f"c{i}"), candidates)
        assert sorted(c.key for c in order) == sorted(c.key for c in candidates)
        start = candidates.index(order[0])
        assert order == candidates[start:] + candidates[:start]
        counts[order[0].key] += 1
    assert set(counts.values()) == {2500}


def test_round_robin_stays_even_when_the_candidates_shrink() -> None:
    rr = algorithms.make_selector(4)
    candidates = cands(4)
    for i in range(7):
        rr.order(ctx(str(i)), candidates)
    three = candidates[:3]
    counts = Counter(rr.order(ctx(str(i)), three)[0].key for i in range(3000))
    assert set(counts.values()) == {1000}
    assert rr.order(ctx("x"), []) == []


# --- hashing -------------------------------------------------------------------


@pytest.mark.parametrize("name", HASHES)
def test_hashes_spread_keys_roughly_evenly(name: str) -> None:
    candidates = cands(4)
    sel = selector(name)
    counts = Counter(sel.order(varied_ctx(i), candidates)[0].key for i in range(10_000))
    assert len(counts) == 4
    # Binomial sd is ~43 for 2500 of 10k: +-10 % is about six sigmas.
    for count in counts.values():
        assert 2250 <= count <= 2750, counts


@pytest.mark.parametrize("name", HASHES)
def test_hashes_are_sticky_and_the_failover_order_is_the_full_ranking(name: str) -> None:
    candidates = cands(5)
    for i in range(200):
        first = selector(name).order(varied_ctx(i), candidates)
        again = selector(name).order(varied_ctx(i), list(reversed(candidates)))
        assert first == again  # fresh selector, other input order: same list
        assert sorted(c.key for c in first) == sorted(c.key for c in candidates)
        # Losing the first choice promotes exactly the second: no reshuffle.
        without_first = [c for c in candidates if c != first[0]]
        assert selector(name).order(varied_ctx(i), without_first) == first[1:]


@pytest.mark.parametrize("n", [4, 8, 16])
def test_adding_one_destination_remaps_about_one_key_in_n(n: int) -> None:
    before, after = cands(n), cands(n + 1)
    added = after[-1]
    keys = call_ids(10_000)
    moved = 0
    for key in keys:
        old = algorithms.rendezvous_order(key, before)
        new = algorithms.rendezvous_order(key, after)
        # The new ranking is the old one with the newcomer inserted somewhere.
        assert [c for c in new if c != added] == old
        if new[0] != old[0]:
            assert new[0] == added  # a key only ever moves to the newcomer
            moved += 1
    assert moved / len(keys) <= 1.2 / n
    assert moved / len(keys) >= 0.7 / (n + 1)  # and the newcomer does get its share


def test_modulo_hashing_would_fail_the_same_bound() -> None:
    # Guards the remap test's power: `hash % n` remaps most keys.
    keys = call_ids(2000)
    digest = [algorithms._hash64(k) for k in keys]
    moved = sum(d % 8 != d % 9 for d in digest)
    assert moved / len(keys) > 1.2 / 8


def test_rendezvous_order_does_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from sipdispatch.dispatch import algorithms as a\n"
        "from dispatchhelpers import cands\n"
        "print([[c.key[-20:] for c in a.rendezvous_order(f'k{i}', cands(6))] for i in range(50)])"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    here = [
        [c.key[-20:] for c in algorithms.rendezvous_order(f"k{i}", cands(6))] for i in range(50)
    ]
    assert outputs == {f"{here}\n"}


def test_hash_ruri_hashes_the_user_not_the_dressing() -> None:
    sel = algorithms.make_selector("hash-ruri")
    candidates = cands(8)
    plain = ctx("a", request_uri="sip:4455@lb1.example.com", request_uri_user="4455")
    dressed = ctx(
        "b", request_uri="sip:4455@LB2.example.com:5080;user=phone", request_uri_user="4455"
    )
    assert sel.order(plain, candidates) == sel.order(dressed, candidates)
    # With no user part, the user@host identity of the URI is hashed.
    hosts = {
        sel.order(ctx("c", request_uri=f"sip:gw{i}.example.com"), candidates)[0] for i in range(40)
    }
    assert len(hosts) > 1


def test_hash_from_ignores_tag_display_name_and_port() -> None:
    sel = algorithms.make_selector("hash-from")
    candidates = cands(8)
    a = ctx("1", from_uri="sip:alice@Example.com")
    b = ctx("2", from_uri='"Alice" <sip:alice@example.com:5062;transport=tcp>;tag=88')
    assert sel.order(a, candidates) == sel.order(b, candidates)


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("hash-auth-user", {}),
        ("hash-from", {"from_uri": ""}),
        ("hash-key", {"headers": {}}),
    ],
)
def test_a_missing_key_falls_back_to_the_call_id(name: str, missing: dict[str, object]) -> None:
    candidates = cands(6)
    by_call_id = algorithms.make_selector("hash-callid")
    sel = selector(name)
    for call_id in call_ids(50):
        assert sel.order(ctx(call_id, **missing), candidates) == by_call_id.order(
            ctx(call_id), candidates
        )


@pytest.mark.parametrize(
    ("key", "fields", "same_as"),
    [
        ("ruri.user", {"request_uri": "sip:600@a", "request_uri_user": "600"}, "600"),
        ("from.user", {"from_uri": "<sip:bob@x.example>;tag=1"}, "bob"),
        ("to.user", {"to_uri": "sip:queue7@pbx"}, "queue7"),
        ("X-Queue", {"headers": {"x-queue": "sales"}}, "sales"),
        ("header:X-Queue", {"headers": {"X-QUEUE": " sales "}}, "sales"),
        ("auth.user", {"auth_username": "carol"}, "carol"),
    ],
)
def test_hash_key_hashes_the_configured_part(
    key: str, fields: dict[str, object], same_as: str
) -> None:
    candidates = cands(8)
    sel = algorithms.make_selector("hash-key", hash_key=key)
    expected = algorithms.rendezvous_order(same_as, candidates)
    for call_id in ("one", "two", "three"):
        assert sel.order(ctx(call_id, **fields), candidates) == expected


# --- random --------------------------------------------------------------------


def test_random_uses_the_injected_generator_and_covers_everyone() -> None:
    candidates = cands(4)
    first = algorithms.make_selector("random", rng=random.Random(7))
    second = algorithms.make_selector(6, rng=random.Random(7))
    orders = [first.order(ctx("x"), candidates) for _ in range(4000)]
    assert orders == [second.order(ctx("x"), candidates) for _ in range(4000)]
    counts = Counter(order[0].key for order in orders)
    assert all(850 <= n <= 1150 for n in counts.values()), counts
    assert all(sorted(o, key=lambda c: c.key) == candidates for o in orders)


# --- priority, parallel --------------------------------------------------------


def test_priority_is_serial_highest_first_through_the_table() -> None:
    dests = tuple(
        tableconfig.Destination.create(1, uri, priority=p)
        for uri, p in [("sip:10.0.0.1", 5), ("sip:10.0.0.2", 20), ("sip:10.0.0.3", 10)]
    )
    config = tableconfig.TableConfig((tableconfig.SetConfig(1, dests, "priority"),))
    dtable = destinations.DestinationTable.build(config, None, 0.0)
    for i in range(20):
        assert [t.destination.uri for t in dtable.select(1, ctx(str(i)))] == [
            "sip:10.0.0.2",
            "sip:10.0.0.3",
            "sip:10.0.0.1",
        ]


def test_parallel_returns_every_candidate_in_table_order() -> None:
    candidates = cands(5)
    assert algorithms.make_selector("parallel").order(ctx("a"), candidates) == candidates


# --- weights -------------------------------------------------------------------


def test_weight_is_proportional_exactly_per_turn() -> None:
    candidates = [Cand("a", weight=50), Cand("b", weight=30), Cand("c", weight=20)]
    sel = algorithms.make_selector("weight")
    counts = Counter(sel.order(ctx(str(i)), candidates)[0].key for i in range(10_000))
    assert counts == {"a": 5000, "b": 3000, "c": 2000}


def test_weight_with_awkward_weights_stays_within_a_percent() -> None:
    candidates = [Cand("a", weight=997), Cand("b", weight=13), Cand("c", weight=0)]
    sel = algorithms.make_selector(9)
    counts = Counter(sel.order(ctx(str(i)), candidates)[0].key for i in range(10_000))
    assert counts["c"] == 0
    assert abs(counts["b"] / 10_000 - 13 / 1010) < 0.01


def test_weight_failover_tail_is_by_weight_and_zero_weights_come_last() -> None:
    candidates = [Cand("z", weight=0), Cand("a", weight=1), Cand("b", weight=5)]
    sel = algorithms.make_selector("weight")
    for i in range(12):
        order = sel.order(ctx(str(i)), candidates)
        assert order[-1].key == "z"
        rest = list(order[1:-1])
        assert [c.weight for c in rest] == sorted((c.weight for c in rest), reverse=True)


def test_all_zero_weights_fall_back_to_table_order() -> None:
    candidates = [Cand("a", weight=0), Cand("b", weight=0)]
    assert algorithms.make_selector("weight").order(ctx("x"), candidates) == candidates


def test_relative_weight_renormalises_over_active_destinations() -> None:
    uris = ["sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"]
    dests = tuple(
        tableconfig.Destination.create(1, uri, rweight=w)
        for uri, w in zip(uris, (1, 2, 1), strict=True)
    )
    config = tableconfig.TableConfig((tableconfig.SetConfig(1, dests, "relative-weight"),))
    dtable = destinations.DestinationTable.build(config, None, 0.0)

    def shares(n: int) -> Counter[str]:
        return Counter(dtable.select(1, ctx(str(i)))[0].destination.uri for i in range(n))

    assert shares(4000) == {uris[0]: 1000, uris[1]: 2000, uris[2]: 1000}
    dtable.set_state(1, uris[2], "ip", now=1.0)
    assert shares(3000) == {uris[0]: 1000, uris[1]: 2000}
    dtable.set_state(1, uris[2], "ap", now=2.0)
    assert shares(4000) == {uris[0]: 1000, uris[1]: 2000, uris[2]: 1000}


# --- call load -----------------------------------------------------------------


def test_call_load_prefers_the_least_loaded_and_skips_full_destinations() -> None:
    candidates = [
        Cand("a", active_calls=5, maxload=10),
        Cand("b", active_calls=2, maxload=2),  # full
        Cand("c", active_calls=3),  # no limit
        Cand("d", active_calls=0, maxload=1),
    ]
    order = algorithms.make_selector("call-load").order(ctx("x"), candidates)
    assert [c.key for c in order] == ["d", "c", "a"]


def test_call_load_pools_destinations_sharing_a_duid() -> None:
    candidates = [
        Cand("a1", duid="gw-a", active_calls=3, maxload=5),
        Cand("a2", duid="gw-a", active_calls=2, maxload=5),  # pool is full: 5
        Cand("b", duid="gw-b", active_calls=4),
    ]
    order = algorithms.make_selector(10).order(ctx("x"), candidates)
    assert [c.key for c in order] == ["b"]


def test_call_load_through_the_table_counts_runtime_calls() -> None:
    dtable = table(["sip:10.0.0.1", "sip:10.0.0.2"], "call-load", maxload=2)
    chosen: list[str | None] = []
    for i in range(5):
        targets = dtable.select(1, ctx(str(i)))
        if not targets:
            chosen.append(None)
            continue
        targets[0].runtime.call_started()
        chosen.append(targets[0].destination.uri)
    assert chosen[:4].count("sip:10.0.0.1") == 2
    assert chosen[:4].count("sip:10.0.0.2") == 2
    assert chosen[4] is None  # both at maxload
    dtable.find(1, "sip:10.0.0.2").runtime.call_ended()
    assert [t.destination.uri for t in dtable.select(1, ctx("z"))] == ["sip:10.0.0.2"]


# --- latency -------------------------------------------------------------------


def test_latency_orders_by_estimate_with_unmeasured_last() -> None:
    candidates = [
        Cand("slow", latency_estimate=0.2),
        Cand("new"),
        Cand("fast", latency_estimate=0.01),
        Cand("mid", latency_estimate=0.05),
    ]
    order = algorithms.make_selector("latency").order(ctx("x"), candidates)
    assert [c.key for c in order] == ["fast", "mid", "slow", "new"]


def test_latency_through_the_table_follows_measured_round_trips() -> None:
    uris = ["sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"]
    dtable = table(uris, "latency")
    policy = health.HealthPolicy()
    for uri, rtt in zip(uris, (0.09, 0.02, 0.05), strict=True):
        health.apply(dtable.find(1, uri).runtime.health, health.Result.success(rtt), policy, 1.0)
    assert [t.destination.uri for t in dtable.select(1, ctx("a"))] == [uris[1], uris[2], uris[0]]
    # Timeouts feed the estimate: two (still TP, selectable) make the fastest sink.
    for _ in range(2):
        health.apply(
            dtable.find(1, uris[1]).runtime.health, health.Result.timeout(2.0), policy, 2.0
        )
    assert dtable.find(1, uris[1]).runtime.health.code == "TP"
    assert [t.destination.uri for t in dtable.select(1, ctx("a"))] == [uris[2], uris[0], uris[1]]
