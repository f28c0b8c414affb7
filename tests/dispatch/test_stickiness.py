"""Stickiness done right: ``maxLoad`` under every algorithm, and a missing hash key."""

from __future__ import annotations

import pytest
from dispatchhelpers import ctx, table

from sipdispatch.dispatch import algorithms, tableconfig
from sipdispatch.dispatch.destinations import DestinationTable

URIS = ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"]


@pytest.mark.parametrize("algorithm", [a for a in algorithms.ALGORITHMS if a != "hash-key"])
def test_a_destination_at_its_max_load_takes_no_new_call(algorithm: str) -> None:
    dtable = table(URIS, algorithm, maxload=2)
    full = dtable.sets[1].targets[0]
    full.runtime.active_calls = 2
    for i in range(30):
        candidates = dtable.select(1, ctx(f"call-{i}"))
        assert full not in candidates  # neither first choice nor failover
        assert len(candidates) == 2
    full.runtime.call_ended()
    assert full in dtable.select(1, ctx("call-after"))


def test_max_load_pools_the_calls_of_one_duid() -> None:
    dtable = table(URIS[:2], "round-robin", maxload=3, duid="gw")
    first, second = dtable.sets[1].targets
    first.runtime.active_calls, second.runtime.active_calls = 2, 1
    assert dtable.select(1, ctx("call")) == []


def hash_key_table(missing: str) -> DestinationTable:
    dests = tuple(tableconfig.Destination.create(1, uri) for uri in URIS)
    config = tableconfig.TableConfig(
        (tableconfig.SetConfig(1, dests, "hash-key", "X-Queue", missing),)
    )
    return DestinationTable.build(config, None, 0.0)


def test_a_missing_hash_key_is_noticed_and_the_call_id_is_hashed() -> None:
    dtable = hash_key_table("fallback")
    dest_set = dtable.sets[1]
    assert dest_set.key_missing(ctx("call-1"))
    assert not dest_set.key_missing(ctx("call-1", headers={"X-Queue": "sales"}))
    assert not dest_set.refuse_missing_key
    assert dtable.select(1, ctx("call-1")) == dtable.select(1, ctx("call-1"))


def test_reject_is_a_setting_and_other_algorithms_have_no_key_to_miss() -> None:
    assert hash_key_table("reject").sets[1].refuse_missing_key
    assert not table(URIS, "hash-from").sets[1].key_missing(ctx("call-1"))
    with pytest.raises(ValueError, match="fallback or reject"):
        hash_key_table("drop")


def test_a_retry_after_a_challenge_goes_first_to_its_destination_and_moves_no_cursor() -> None:
    dtable = table(URIS, "round-robin")
    dest_set = dtable.sets[1]
    first = dest_set.select(ctx("a"))[0]
    third = dest_set.targets[2]
    retry = dest_set.select_first(third.identity)
    assert retry is not None
    assert [t.destination.uri for t in retry] == [URIS[2], URIS[0], URIS[1]]
    assert dest_set.select(ctx("b"))[0] is not first  # the cursor moved once, for "a" only
    assert dest_set.select(ctx("b"))[0] is third
    third.runtime.health.disabled = True
    assert dest_set.select_first(third.identity) is None  # it cannot take calls now
