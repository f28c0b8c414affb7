"""Every algorithm, 0 to 13, through a live destination table: where many calls go.

One test per algorithm number checks the distribution of first choices over 12,000 calls
against what the algorithm promises; hash algorithms are also checked for stickiness and for
the share of keys that move when a destination is added to the table (at most 1.2/N).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable

import pytest

from sipdispatch.dispatch import algorithms, context, destinations, health, tableconfig

CALLS = 12_000
URIS = [f"sip:10.0.0.{i}:5060" for i in range(1, 5)]
POLICY = health.HealthPolicy()


def request(i: int) -> context.RequestContext:
    """Call ``i``: every field a hash algorithm may use differs with ``i``."""
    return context.RequestContext(
        call_id=f"{i:08x}-call@198.51.100.7",
        from_uri=f"sip:caller{i}@example.com",
        to_uri=f"sip:queue{i}@pbx.example.com",
        request_uri=f"sip:{10_000 + i}@lb.example.com",
        request_uri_user=str(10_000 + i),
        auth_username=f"user{i}",
        headers={"X-Queue": f"queue-{i}"},
    )


def build(
    algorithm: int,
    uris: list[str] = URIS,
    previous: destinations.DestinationTable | None = None,
    **per_uri: list[int],
) -> destinations.DestinationTable:
    """A one-set table; ``per_uri`` gives a field per destination (``weight=[4, 3, 2, 1]``)."""
    dests = tuple(
        tableconfig.Destination.create(
            1,
            uri,
            **{name: values[i] for name, values in per_uri.items()},  # type: ignore[arg-type]
        )
        for i, uri in enumerate(uris)
    )
    hash_key = "X-Queue" if algorithm == 7 else None
    config = tableconfig.TableConfig(
        (tableconfig.SetConfig(1, dests, algorithms.resolve(algorithm), hash_key),)
    )
    return destinations.DestinationTable.build(
        config, previous, 0.0, policy=POLICY, rng=random.Random(algorithm)
    )


def first_choices(
    table: destinations.DestinationTable, calls: int = CALLS, key: Callable[[int], int] = int
) -> Counter[str]:
    return Counter(table.select(1, request(key(i)))[0].destination.uri for i in range(calls))


def shares(counts: Counter[str], uris: list[str] = URIS) -> list[float]:
    total = sum(counts.values())
    return [counts[uri] / total for uri in uris]


# --- hashes: 0 Call-ID, 1 From, 2 To, 3 Request-URI, 5 auth user, 7 configured key -----

HASHES = [0, 1, 2, 3, 5, 7]


@pytest.mark.parametrize("algorithm", HASHES)
def test_hash_algorithms_spread_evenly_stick_and_remap_little(algorithm: int) -> None:
    table = build(algorithm)
    counts = first_choices(table)
    # An even spread: each share within 10 % of a quarter (~8 binomial sigmas).
    assert all(0.225 <= share <= 0.275 for share in shares(counts)), counts
    # Sticky: the same request goes to the same destination, whatever else happens.
    for i in range(0, CALLS, 97):
        assert table.select(1, request(i)) == table.select(1, request(i))

    # Adding a destination to N = 8 moves at most 1.2/N of the keys, all to the newcomer.
    eight = [f"sip:10.0.1.{i}:5060" for i in range(1, 9)]
    before = build(algorithm, eight)
    chosen = [before.select(1, request(i))[0].destination.uri for i in range(CALLS)]
    after = build(algorithm, [*eight, "sip:10.0.1.9:5060"], previous=before)
    moved = 0
    for i, old in enumerate(chosen):
        new = after.select(1, request(i))[0].destination.uri
        if new != old:
            assert new == "sip:10.0.1.9:5060"
            moved += 1
    assert moved / CALLS <= 1.2 / 8
    assert moved / CALLS >= 0.7 / 9  # and the newcomer gets about its share


@pytest.mark.parametrize("algorithm", HASHES)
def test_hash_algorithms_fail_over_without_reshuffling(algorithm: int) -> None:
    table = build(algorithm)
    before = {i: table.select(1, request(i)) for i in range(2000)}
    table.set_state(1, URIS[0], "ip", 1.0)
    for i, order in before.items():
        survivors = [t for t in order if t.destination.uri != URIS[0]]
        assert table.select(1, request(i)) == survivors


# --- 4 round-robin, 6 random -------------------------------------------------------


def test_4_round_robin_is_exactly_even() -> None:
    counts = first_choices(build(4))
    assert set(counts.values()) == {CALLS // 4}


def test_6_random_is_even_within_statistics() -> None:
    counts = first_choices(build(6))
    assert all(0.225 <= share <= 0.275 for share in shares(counts)), counts
    # Not round-robin in disguise: runs of the same destination do happen.
    table = build(6)
    picks = [table.select(1, request(i))[0].destination.uri for i in range(400)]
    assert any(a == b for a, b in itertools.pairwise(picks))


# --- 8 priority --------------------------------------------------------------------


def test_8_priority_sends_everything_to_the_highest_priority_while_it_is_up() -> None:
    table = build(8, priority=[10, 30, 20, 0])
    assert first_choices(table) == {URIS[1]: CALLS}
    table.set_state(1, URIS[1], "ip", 1.0)
    assert first_choices(table) == {URIS[2]: CALLS}
    assert [t.destination.uri for t in table.select(1, request(1))] == [URIS[2], URIS[0], URIS[3]]


# --- 9 weight, 11 relative weight ---------------------------------------------------


def test_9_weight_is_proportional() -> None:
    counts = first_choices(build(9, weight=[4, 3, 2, 1]))
    assert shares(counts) == [0.4, 0.3, 0.2, 0.1]


def test_11_relative_weight_renormalises_over_what_is_up() -> None:
    table = build(11, rweight=[1, 2, 3, 4])
    assert shares(first_choices(table)) == [0.1, 0.2, 0.3, 0.4]
    table.set_state(1, URIS[3], "dx", 1.0)
    assert shares(first_choices(table)) == [1 / 6, 2 / 6, 3 / 6, 0.0]


# --- 10 call load ------------------------------------------------------------------


def test_10_call_load_gives_each_call_to_the_least_loaded_with_calls_of_any_length() -> None:
    table = build(10)
    rng = random.Random(10)
    ending: list[tuple[int, destinations.Target]] = []  # (call end tick, target)
    counts: Counter[str] = Counter()
    for tick in range(CALLS):
        still = []
        for end, target in ending:
            if end <= tick:
                target.runtime.call_ended()
            else:
                still.append((end, target))
        ending = still
        loads = [t.runtime.active_calls for t in table.get_set(1).targets]
        target = table.select(1, request(tick))[0]
        assert target.runtime.active_calls == min(loads), (tick, loads)  # the least loaded
        target.runtime.call_started()
        counts[target.destination.uri] += 1
        ending.append((tick + rng.randint(1, 200), target))
    # Short and long calls average out: each destination took about a quarter of the calls.
    assert all(0.2 <= share <= 0.3 for share in shares(counts)), counts


def test_10_call_load_never_exceeds_maxload() -> None:
    table = build(10, maxload=[2, 5, 5, 1])
    started = Counter[str]()
    while (order := table.select(1, request(len(started)))) != []:
        order[0].runtime.call_started()
        started[order[0].destination.uri] += 1
    assert started == {URIS[0]: 2, URIS[1]: 5, URIS[2]: 5, URIS[3]: 1}


# --- 12 parallel -------------------------------------------------------------------


def test_12_parallel_forks_every_call_to_every_destination_that_is_up() -> None:
    table = build(12)
    forks = Counter(t.destination.uri for i in range(CALLS) for t in table.select(1, request(i)))
    assert forks == dict.fromkeys(URIS, CALLS)
    table.set_state(1, URIS[2], "ip", 1.0)
    assert [t.destination.uri for t in table.select(1, request(0))] == [
        URIS[0],
        URIS[1],
        URIS[3],
    ]


# --- 13 latency --------------------------------------------------------------------


def test_13_latency_sends_to_the_fastest_and_follows_it_when_it_slows_down() -> None:
    table = build(13)
    for uri, rtt in zip(URIS, (0.040, 0.010, 0.020, 0.030), strict=True):
        health.apply(table.find(1, uri).runtime.health, health.Result.success(rtt), POLICY, 1.0)
    assert first_choices(table) == {URIS[1]: CALLS}
    assert [t.destination.uri for t in table.select(1, request(0))] == [
        URIS[1],
        URIS[2],
        URIS[3],
        URIS[0],
    ]
    # The fastest starts answering in 80 ms: within a few probes the calls move.
    for _ in range(5):
        health.apply(
            table.find(1, URIS[1]).runtime.health, health.Result.success(0.080), POLICY, 2.0
        )
    assert first_choices(table) == {URIS[2]: CALLS}


def test_every_algorithm_number_has_a_distribution_test_here() -> None:
    names = {
        name.removeprefix("test_").split("_", 1)[0]
        for name in globals()
        if name.startswith("test_") and name.split("_")[1].isdigit()
    }
    covered = {int(n) for n in names} | set(HASHES)
    assert covered == set(range(14))
