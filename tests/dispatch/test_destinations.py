"""Destinations and the live table: parsing, selection, reloads that keep health."""

from __future__ import annotations

import pytest
from dispatchhelpers import ctx, table

from sipdispatch.dispatch import destinations, health, tableconfig
from sipdispatch.dispatch.tableconfig import Destination, DestinationError, SetConfig

TWO = ["sip:127.0.0.2:5060", "sip:127.0.0.3:5060"]
POLICY = health.HealthPolicy(failure_threshold=2, success_threshold=2)


def build(
    sets: dict[int, list[Destination]],
    previous: destinations.DestinationTable | None = None,
    algorithm: str = "round-robin",
    now: float = 0.0,
) -> destinations.DestinationTable:
    config = tableconfig.TableConfig(
        tuple(SetConfig(i, tuple(d), algorithm) for i, d in sets.items())
    )
    return destinations.DestinationTable.build(config, previous, now, policy=POLICY)


def fail_until_down(target: destinations.Target, now: float = 1.0) -> None:
    for _ in range(POLICY.failure_threshold):
        health.apply(target.runtime.health, health.Result.timeout(2.0), POLICY, now)
    assert target.runtime.health.code == "IP"


# --- Destination ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "host", "port", "transport"),
    [
        ("sip:10.0.0.5", "10.0.0.5", 5060, "udp"),
        ("sip:10.0.0.5:5080;transport=TCP", "10.0.0.5", 5080, "tcp"),
        ("sips:gw.Example.COM", "gw.example.com", 5061, "tls"),
        ("sips:gw.example.com;transport=tcp", "gw.example.com", 5061, "tls"),
        ("sip:queue@[2001:DB8::1]:5070", "2001:db8::1", 5070, "udp"),
        (
            "SIP:asterisk-0.asterisk.voice.svc.cluster.local.",
            "asterisk-0.asterisk.voice.svc.cluster.local",
            5060,
            "udp",
        ),
    ],
)
def test_uri_parts_and_defaults(uri: str, host: str, port: int, transport: str) -> None:
    dest = Destination.create(1, uri)
    assert (dest.host, dest.port, dest.transport) == (host, port, transport)
    assert dest.uri == uri  # kept as written, for display and Request-URI use


def test_the_key_ignores_spelling_but_not_the_address() -> None:
    same = [
        "sip:10.0.0.5",
        "SIP:10.0.0.5:5060",
        "sip:10.0.0.5;transport=udp;lr",
        "sip:10.0.0.5:5060;TRANSPORT=UDP",
    ]
    assert len({Destination.create(1, u).key for u in same}) == 1
    different = ["sip:10.0.0.5:5061", "sip:10.0.0.5;transport=tcp", "sip:10.0.0.6", "sips:10.0.0.5"]
    keys = {Destination.create(1, u).key for u in [same[0], *different]}
    assert len(keys) == 5
    assert Destination.create(1, same[0]).key != Destination.create(2, same[0]).key


def test_attrs_are_parsed_into_fields_and_kept() -> None:
    attrs = {
        "weight": "50",
        "rweight": "20",
        "duid": "gw1",
        "maxload": "20",
        "socket": "UDP:192.0.2.1:5060",
        "ping_from": "sip:lb@example.com",
        "class": "4",
    }
    dest = Destination.create(1, "sip:10.0.0.5", 8, 10, attrs)
    assert (dest.weight, dest.rweight, dest.duid, dest.maxload) == (50, 20, "gw1", 20)
    assert dest.socket == "udp:192.0.2.1:5060"
    assert dest.ping_from == "sip:lb@example.com"
    assert (dest.flags, dest.priority) == (8, 10)
    assert dest.attrs["class"] == "4"
    assert dict(dest.attrs) == attrs


def test_defaults_weight_one_and_rweight_following_weight() -> None:
    dest = Destination.create(1, "sip:10.0.0.5", weight=7)
    assert (dest.weight, dest.rweight, dest.maxload, dest.disabled) == (7, None, 0, False)
    target = destinations.Target(dest, destinations.Runtime(health.HealthRecord()))
    assert target.rweight == 7
    assert Destination.create(1, "sip:10.0.0.5").weight == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((1, "foo"), {}, "uri"),
        ((1, "sip:10.0.0.5:99999"), {}, "uri"),
        ((1, "sip:10.0.0.5;transport=sctp"), {}, "uri"),
        ((1, "sips:10.0.0.5;transport=udp"), {}, "uri"),
        ((1, "sip:bad_host!"), {}, "uri"),
        ((-1, "sip:10.0.0.5"), {}, "setid"),
        ((1, "sip:10.0.0.5", 64), {}, "flags"),
        ((1, "sip:10.0.0.5", 0, 0, {"weight": "-3"}), {}, "attrs.weight"),
        ((1, "sip:10.0.0.5", 0, 0, {"maxload": "many"}), {}, "attrs.maxload"),
        ((1, "sip:10.0.0.5", 0, 0, {"socket": "udp:1.2.3.4"}), {}, "attrs.socket"),
        ((1, "sip:10.0.0.5", 0, 0, {"ping_from": "lb@x"}), {}, "attrs.ping_from"),
        ((1, "sip:10.0.0.5", 0, 0, {"weight": "2"}), {"weight": 3}, "weight"),
        ((1, "sip:10.0.0.5"), {"maxload": -1}, "maxload"),
    ],
)
def test_bad_destinations_name_the_field(
    args: tuple[object, ...], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(DestinationError) as info:
        Destination.create(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_flag_4_disables() -> None:
    assert Destination.create(1, "sip:10.0.0.5", 4).disabled


def test_a_set_cannot_list_a_destination_twice_or_hold_another_sets() -> None:
    a = Destination.create(1, "sip:10.0.0.5")
    with pytest.raises(ValueError, match="listed twice"):
        SetConfig(1, (a, Destination.create(1, "SIP:10.0.0.5:5060")))
    with pytest.raises(ValueError, match="belongs to set 1"):
        SetConfig(2, (a,))
    with pytest.raises(ValueError, match="hash key"):
        SetConfig(1, (a,), "hash-key")
    with pytest.raises(ValueError, match="not unique"):
        tableconfig.TableConfig((SetConfig(1, ()), SetConfig(1, ())))
    with pytest.raises(ValueError, match="default set 3"):
        tableconfig.TableConfig((SetConfig(1, ()),), default_set=3)


# --- selection -------------------------------------------------------------------------


def test_selection_returns_only_destinations_eligible_for_new_dialogs() -> None:
    uris = [f"sip:10.0.0.{i}" for i in range(1, 7)]
    dtable = table(uris, "parallel", policy=POLICY)
    states = {uris[0]: "ap", uris[1]: "ax", uris[2]: "tp", uris[3]: "ip", uris[4]: "dx"}
    for uri, code in states.items():
        dtable.set_state(1, uri, code, 1.0)
    dtable.set_state(1, uris[5], "dr", 1.0)
    assert [t.destination.uri for t in dtable.select(1, ctx("x"))] == uris[:3]
    assert [t.runtime.health.code for t in dtable.sets[1].targets] == [
        "AP",
        "AX",
        "TP",
        "IP",
        "DX",
        "DR",
    ]


def test_unknown_set_raises_and_a_dead_set_gives_an_empty_list() -> None:
    dtable = table(TWO, policy=POLICY)
    with pytest.raises(destinations.UnknownSetError, match="no destination set 9") as info:
        dtable.select(9, ctx("x"))
    assert info.value.set_id == 9
    for target in dtable.sets[1].targets:
        fail_until_down(target)
    assert dtable.select(1, ctx("x")) == []


def test_find_accepts_any_spelling_and_reports_unknown_uris() -> None:
    dtable = table(TWO, policy=POLICY)
    assert dtable.find(1, "SIP:127.0.0.2;transport=udp").destination.uri == TWO[0]
    with pytest.raises(destinations.UnknownDestinationError, match="no destination"):
        dtable.find(1, "sip:127.0.0.9")
    with pytest.raises(destinations.UnknownDestinationError, match="not a SIP URI"):
        dtable.find(1, "127.0.0.2")
    with pytest.raises(destinations.UnknownSetError):
        dtable.find(2, TWO[0])


def test_targets_iterate_sets_in_id_order() -> None:
    dtable = build(
        {
            3: [Destination.create(3, "sip:10.0.0.3")],
            1: [Destination.create(1, "sip:10.0.0.1"), Destination.create(1, "sip:10.0.0.2")],
        }
    )
    assert [t.key.split(":")[0] for t in dtable.targets()] == ["1", "1", "3"]


def test_expire_reports_drains_that_ended() -> None:
    dtable = table(TWO, policy=POLICY)
    target = dtable.find(1, TWO[0])
    health.apply(target.runtime.health, health.Result.overloaded(10.0), POLICY, 5.0)
    assert dtable.expire(14.0) == []
    [(expired, event)] = dtable.expire(15.0)
    assert expired is target
    assert isinstance(event, health.DestinationUp)


# --- reloads -----------------------------------------------------------------------


def test_reload_keeps_learned_health_latency_and_calls_by_key() -> None:
    old = table(TWO, policy=POLICY)
    target = old.find(1, TWO[1])
    fail_until_down(target)
    health.apply(target.runtime.health, health.Result.success(0.03), POLICY, 2.0)
    target.runtime.call_started()
    # The same destinations, spelled differently and reordered, plus a new one.
    new = table(
        ["sip:127.0.0.9", "SIP:127.0.0.3", "sip:127.0.0.2:5060;transport=udp"],
        previous=old,
        now=10.0,
        policy=POLICY,
    )
    carried = new.find(1, TWO[1])
    assert carried.runtime is target.runtime
    assert carried.runtime.health.code == "AX"  # coming up, one success short
    assert not carried.eligible
    assert carried.runtime.health.successes == 1
    assert carried.runtime.health.latency.count == 1
    assert carried.runtime.active_calls == 1
    assert new.find(1, TWO[0]).runtime is old.find(1, TWO[0]).runtime
    fresh = new.find(1, "sip:127.0.0.9").runtime.health
    assert (fresh.code, fresh.changed_at) == ("AP", 10.0)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"uri": "sip:127.0.0.3:5060"}, {"uri": "sip:127.0.0.3:5070"}),
        ({"uri": "sip:127.0.0.3"}, {"uri": "sip:127.0.0.3;transport=tcp"}),
        ({"socket": "udp:192.0.2.1:5060"}, {"socket": "udp:192.0.2.2:5060"}),
    ],
)
def test_a_changed_destination_gets_fresh_health(
    before: dict[str, str], after: dict[str, str]
) -> None:
    def dest(fields: dict[str, str]) -> Destination:
        return Destination.create(
            1, fields.get("uri", "sip:127.0.0.3"), socket=fields.get("socket")
        )

    old = build({1: [dest(before)]})
    fail_until_down(old.sets[1].targets[0])
    new = build({1: [dest(after)]}, previous=old, now=5.0)
    record = new.sets[1].targets[0].runtime.health
    assert record.code == "AP"
    assert record.failures == 0
    assert record.changed_at == 5.0


def test_changes_that_do_not_touch_the_address_keep_health() -> None:
    old = build({1: [Destination.create(1, "sip:127.0.0.3", weight=1, priority=1)]})
    fail_until_down(old.sets[1].targets[0])
    new = build({1: [Destination.create(1, "sip:127.0.0.3", weight=9, priority=5)]}, old)
    target = new.sets[1].targets[0]
    assert target.runtime.health.code == "IP"
    assert target.destination.weight == 9  # while the configuration is the new one


def test_disabled_in_the_configuration_wins_over_learned_health() -> None:
    old = table(TWO, policy=POLICY)
    health.set_admin_state(old.find(1, TWO[0]).runtime.health, "ap", 1.0)
    new = build(
        {1: [Destination.create(1, TWO[0], disabled=True), Destination.create(1, TWO[1], 4)]},
        previous=old,
    )
    assert [t.runtime.health.code for t in new.sets[1].targets] == ["DX", "DX"]
    assert new.select(1, ctx("x")) == []
    # Results never lift it, and neither does the next reload of the same file.
    for target in new.sets[1].targets:
        for _ in range(5):
            health.apply(target.runtime.health, health.Result.success(0.01), POLICY, 2.0)
    health.set_admin_state(new.find(1, TWO[0]).runtime.health, "ap", 3.0)  # admin override
    again = build(
        {1: [Destination.create(1, TWO[0], disabled=True), Destination.create(1, TWO[1], 4)]},
        previous=new,
    )
    assert [t.runtime.health.code for t in again.sets[1].targets] == ["DX", "DX"]


def test_an_admin_disable_survives_reloads_until_the_configuration_changes() -> None:
    old = table(TWO, policy=POLICY)
    old.set_state(1, TWO[0], "dx", 1.0)
    same = table(TWO, previous=old, policy=POLICY)
    assert same.find(1, TWO[0]).runtime.health.code == "DX"
    # Config disables it, then enables it again: the enable lifts the DX.
    disabled = table(TWO, previous=same, policy=POLICY, disabled=True)
    enabled = table(TWO, previous=disabled, policy=POLICY)
    assert [t.runtime.health.code for t in enabled.sets[1].targets] == ["AP", "AP"]


def test_draining_follows_the_configuration() -> None:
    old = table(TWO, policy=POLICY)
    drained = table(TWO, previous=old, policy=POLICY, draining=True)
    assert {t.runtime.health.code for t in drained.sets[1].targets} == {"DR"}
    assert drained.select(1, ctx("x")) == []
    back = table(TWO, previous=drained, policy=POLICY)
    assert {t.runtime.health.code for t in back.sets[1].targets} == {"AP"}


def test_changed_state_flags_apply_and_unchanged_ones_do_not_reset() -> None:
    policy = health.HealthPolicy(2, 2, health.ProbingMode.FLAGGED)
    old = table(TWO, policy=policy, flags=8)
    assert old.find(1, TWO[0]).runtime.health.code == "AP"
    old.set_state(1, TWO[0], "ix", 1.0)
    same = table(TWO, previous=old, policy=policy, flags=8)
    assert same.find(1, TWO[0]).runtime.health.code == "IX"
    trying = table(TWO, previous=same, policy=policy, flags=2)
    assert {t.runtime.health.code for t in trying.sets[1].targets} == {"TX"}


def test_reload_keeps_the_selector_unless_the_algorithm_changed() -> None:
    first = table(["sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"], policy=POLICY)
    picks = [first.select(1, ctx(str(i)))[0].destination.uri for i in range(2)]
    second = table(["sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"], previous=first)
    assert second.sets[1].selector is first.sets[1].selector
    # The round-robin cursor goes on where it was instead of restarting at the first.
    picks.append(second.select(1, ctx("2"))[0].destination.uri)
    assert picks == ["sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"]
    third = table(["sip:10.0.0.1"], "hash-callid", previous=second)
    assert third.sets[1].selector is not second.sets[1].selector
    assert third.sets[1].algorithm == "hash-callid"


def test_destinations_are_in_priority_order_then_configuration_order() -> None:
    dests = [
        Destination.create(1, "sip:10.0.0.1", priority=1),
        Destination.create(1, "sip:10.0.0.2", priority=9),
        Destination.create(1, "sip:10.0.0.3", priority=1),
        Destination.create(1, "sip:10.0.0.4", priority=-2),
    ]
    dtable = build({1: dests})
    assert [t.destination.uri[-1] for t in dtable.sets[1].targets] == ["2", "1", "3", "4"]


def test_a_new_destination_starts_from_its_flags() -> None:
    policy = health.HealthPolicy(mode=health.ProbingMode.FAILED)
    cases = {0: "AX", 1: "IX", 2: "TX", 8: "AP", 9: "IP", 4: "DX"}
    for flags, code in cases.items():
        assert (
            table(TWO[:1], flags=flags, policy=policy).sets[1].targets[0].runtime.health.code
            == code
        )
