"""The reconciler over plain indexes and a recording API: what it writes, and when."""

from __future__ import annotations

from typing import Any

from opfixtures import endpoint, endpoint_slice, report

from sipdispatch.api.report import parse_timestamp
from sipdispatch.api.report import timestamp as iso
from sipdispatch.kube import KubeError
from sipdispatch.operator import k8s
from sipdispatch.operator.controller import Controller, Indexes

NOW = parse_timestamp("2030-01-01T00:00:10.000Z") or 0.0
KEY = ("voice", "sipdispatch")


class RecordingApi:
    """Stands in for k8s.Api (the boundary): records every write; a table written shows up
    in ``reflect`` (the tables index), as the watch would bring it."""

    def __init__(self, reflect: dict[Any, Any] | None = None) -> None:
        self.reflect = reflect
        self.tables: list[tuple[str, str]] = []
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.posted: dict[str, dict[str, Any]] = {}  # Event name -> what it says
        self.gone: set[str] = set()  # Events that expired: updates get 404

    async def apply_table(self, namespace: str, proxy: str, text: str, memory: str) -> str:
        self.tables.append((text, memory))
        if self.reflect is not None:
            self.reflect[(namespace, proxy)] = [
                {"data": {"table.yaml": text, k8s.MEMORY_KEY: memory}}
            ]
        return str(len(self.tables))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append((name, status))

    async def post_event(
        self,
        involved: dict[str, Any],
        kind: str,
        reason: str,
        message: str,
        now: float,
        *,
        count: int = 1,
        first: float | None = None,
    ) -> str:
        self.events.append((involved["metadata"]["name"], kind, reason))
        name = f"{involved['metadata']['name']}.{len(self.posted)}"
        self.posted[name] = {"reason": reason, "message": message, "count": count, "last": now}
        return name

    async def repeat_event(
        self, namespace: str, name: str, message: str, count: int, now: float
    ) -> None:
        if name in self.gone:
            raise KubeError(404, f'events "{name}" not found')
        self.posted[name].update(message=message, count=count, last=now)

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def body(name: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "voice",
            "uid": f"uid-{name}",
            "generation": generation,
            "creationTimestamp": "2030-01-01T00:00:00Z",
        },
        "spec": spec,
    }


def setup() -> tuple[Controller, RecordingApi, Clock, Indexes]:
    tables: dict[Any, Any] = {}
    api = RecordingApi(tables)
    clock = Clock()
    controller = Controller(api, status_interval=1.0, clock=clock)
    indexes = Indexes(
        sets={KEY: [body("asterisk", {"setId": 1, "gateways": [{"service": "gw"}]})]},
        slices={("voice", "gw"): [endpoint_slice("gw-1", [endpoint("10.1.0.5")])]},
        reports={},
        tables=tables,
    )
    controller.bind(indexes)
    return controller, api, clock, indexes


async def test_the_table_is_written_once_and_again_only_when_it_changes() -> None:
    controller, api, _clock, indexes = setup()
    await controller.reconcile(*KEY)
    await controller.reconcile(*KEY)
    assert len(api.tables) == 1
    assert "sip:10.1.0.5:5080" in api.tables[0][0]
    indexes.slices[("voice", "gw")] = [
        endpoint_slice("gw-1", [endpoint("10.1.0.5"), endpoint("10.1.0.6")])
    ]
    await controller.reconcile(*KEY)
    assert len(api.tables) == 2
    assert "sip:10.1.0.6:5080" in api.tables[1][0]


async def test_status_writes_are_coalesced_and_events_follow_them() -> None:
    controller, api, clock, indexes = setup()
    await controller.reconcile(*KEY)
    assert [name for name, _ in api.statuses] == ["asterisk"]
    indexes.reports[KEY] = [
        report("r1", [(1, "sip:10.1.0.5:5080", "AP")], reported_at="2030-01-01T00:00:10.000Z")
    ]
    clock.now += 0.3
    await controller.reconcile(*KEY)
    assert len(api.statuses) == 1  # too soon: held back, a timer brings it
    assert controller._timers[KEY] == NOW + 1.0
    clock.now = NOW + 1.0
    await controller.reconcile(*KEY)
    assert api.statuses[-1][1]["upTotal"] == "1/1"
    indexes.reports[KEY] = [
        report("r1", [(1, "sip:10.1.0.5:5080", "IP")], reported_at="2030-01-01T00:00:11.000Z")
    ]
    clock.now = NOW + 2.5
    await controller.reconcile(*KEY)
    assert api.events == [("asterisk", "Warning", "DestinationDown")]
    await controller.reconcile(*KEY)
    assert len(api.statuses) == 3  # nothing changed: nothing written


async def test_a_restarted_operator_reads_its_memory_from_the_table() -> None:
    controller, _api, clock, indexes = setup()
    await controller.reconcile(*KEY)
    indexes.slices[("voice", "gw")] = []  # the endpoint went while no operator ran
    restarted = Controller(RecordingApi(), clock=clock)
    restarted.bind(indexes)
    await restarted.reconcile(*KEY)
    table = restarted.api.tables[0][0]
    assert "sip:10.1.0.5:5080\n    draining: true" in table
    assert restarted._timers[KEY] == NOW + 30  # the default drain grace


async def test_nothing_is_written_for_a_proxy_that_never_had_sets() -> None:
    controller, api, _clock, _indexes = setup()
    await controller.reconcile("voice", "other")
    assert api.tables == []


async def test_a_table_deleted_by_hand_is_written_again() -> None:
    controller, api, _clock, indexes = setup()
    await controller.reconcile(*KEY)
    text, memory = api.tables[0]
    await controller.reconcile(*KEY)
    assert len(api.tables) == 1
    indexes.tables[KEY] = []
    await controller.reconcile(*KEY)
    assert api.tables[-1] == (text, memory)
    assert len(api.tables) == 2


async def test_a_flapping_destination_updates_two_events_instead_of_adding_them() -> None:
    controller, api, clock, indexes = setup()
    uri = "sip:10.1.0.5:5080"

    def flap(state: str) -> None:
        clock.now += 2.0
        indexes.reports[KEY] = [report("r1", [(1, uri, state)], reported_at=iso(clock.now))]

    for _ in range(6):
        for state in ("AP", "IP"):
            flap(state)
            await controller.reconcile(*KEY)
    assert sorted(e["reason"] for e in api.posted.values()) == ["DestinationDown", "DestinationUp"]
    down = next(e for e in api.posted.values() if e["reason"] == "DestinationDown")
    assert down["count"] == 6
    assert down["message"].endswith("(6 times since 2030-01-01T00:00:14.000Z)")
    assert down["last"] == clock.now

    # An Event that expired (404) is posted again; so is one whose window is over.
    api.gone.update(api.posted)
    flap("AP")
    await controller.reconcile(*KEY)
    assert len(api.posted) == 3
    assert list(api.posted.values())[-1]["count"] == 1
    clock.now += controller.events.window
    flap("IP")
    await controller.reconcile(*KEY)
    assert len(api.posted) == 4
    assert list(api.posted.values())[-1]["reason"] == "DestinationDown"


def test_a_grant_and_the_slices_it_grants_render_the_namespaces_it_names() -> None:
    controller, _api, _clock, _indexes = setup()
    controller.grant_changed("telephony", "pbx", frozenset({"voice"}))
    assert controller._dirty == {KEY}
    controller._dirty.clear()
    controller.slice_changed("telephony", "pbx")  # a gateway of voice's sets changed
    assert controller._dirty == {KEY}
    controller._dirty.clear()
    controller.grant_changed("telephony", "pbx", frozenset())  # withdrawn: voice renders again
    assert controller._dirty == {KEY}
    controller._dirty.clear()
    controller.slice_changed("telephony", "pbx")
    controller.grant_changed("telephony", "other", frozenset())
    assert controller._dirty == set()
