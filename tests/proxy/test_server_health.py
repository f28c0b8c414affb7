"""The server's health wiring: the prober runs with the server, the core's events feed passive
marking, call-load counts and metrics, and reloads keep what was learned. A real server on
loopback with real SIP peers; events that need a whole call are handed to the engine's
``on_events``, as the core hands them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from loopback import Peer, free_udp_port, until
from prometheus_client import generate_latest

from sipdispatch.dispatch import health
from sipdispatch.dispatch.config import ProbingSpec, ProxyConfig
from sipdispatch.dispatch.destinations import DestinationKey
from sipdispatch.proxy.control.app import make_app
from sipdispatch.proxy.events import (
    BranchAnswered,
    BranchFailed,
    BranchStarted,
    CoreEvent,
    DialogEnded,
)
from sipdispatch.proxy.server import ProxyServer
from sipdispatch.proxy.settings import ProxySettings, core_settings
from sipdispatch.proxy.tables import FileTableSource

PROBING = ProbingSpec.model_validate(
    {"interval": 0.1, "timeout": 0.08, "failureThreshold": 2, "successThreshold": 2}
)


class Running:
    def __init__(self, server: ProxyServer, table_file: Path) -> None:
        self.server = server
        self.table_file = table_file

    def record(self, uri: str) -> health.HealthRecord:
        assert self.server.table is not None
        return self.server.table.find(1, uri).runtime.health

    def calls(self, uri: str) -> int:
        assert self.server.table is not None
        return self.server.table.find(1, uri).runtime.active_calls

    def events(self, *events: CoreEvent) -> None:
        """Hand events to the server as the core hands them."""
        assert self.server.engine is not None
        assert self.server.engine.on_events is not None
        self.server.engine.on_events(events)

    def metric(self, line_start: str) -> float:
        for line in generate_latest(self.server.registry).decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., asyncio.Future[Running]]]:
    servers: list[ProxyServer] = []

    async def make(table: str, **options: object) -> Running:
        path = tmp_path / "dispatcher.list"
        path.write_text(table)
        source = FileTableSource(path, kamailio_format=True, algorithm=4, default_set=None)
        server = ProxyServer(
            source,
            ProxySettings(
                listen=(f"udp:127.0.0.1:{free_udp_port()}",),
                control=None,
                probing=options.pop("probing", PROBING),  # type: ignore[arg-type]
                timer_t1=0.02,
                **options,  # type: ignore[arg-type]
            ),
        )
        await server.start()
        servers.append(server)
        return Running(server, path)

    yield make  # type: ignore[misc]
    for server in servers:
        await server.close()


@pytest.mark.slow
async def test_the_prober_runs_with_the_server_and_its_results_reach_the_metrics(
    start: Callable[..., asyncio.Future[Running]], make_peer: Callable[..., asyncio.Future[Peer]]
) -> None:
    up = await make_peer()
    down = await make_peer(status=None)
    run = await start(f"1 {up.uri}\n1 {down.uri}\n")
    await until(lambda: run.record(down.uri).code == "IP")
    await until(lambda: run.record(up.uri).latency.count >= 3)
    assert run.record(up.uri).code == "AP"
    assert run.metric('sipdispatch_probes_total{result="timeout",set="1"}') >= 2
    assert run.metric('sipdispatch_probes_total{result="success",set="1"}') >= 3
    assert run.metric('sipdispatch_probe_latency_seconds_count{set="1"}') >= 3
    down_events = (
        f'sipdispatch_destination_health_events_total{{event="down",set="1",uri="{down.uri}"}}'
    )
    assert run.metric(down_events) == 1
    assert run.metric(f'sipdispatch_destination_state{{set="1",state="IP",uri="{down.uri}"}}') == 1
    assert all("From: <sip:sipdispatch@localhost>" in m for m in up.options())


async def test_failed_calls_mark_their_destination_and_count_failovers(
    start: Callable[..., asyncio.Future[Running]],
) -> None:
    # Probing off: only real traffic moves the state.
    off = ProbingSpec.model_validate(
        {"mode": "off", "failureThreshold": 3, "passiveCodes": ["500"]}
    )
    run = await start("1 sip:127.0.0.2:5060\n1 sip:127.0.0.3:5060\n", probing=off)
    gw1, gw2 = "sip:127.0.0.2:5060", "sip:127.0.0.3:5060"
    run.events(*[BranchFailed(DestinationKey.parse(1, gw2), 486)] * 4)  # busy: says nothing
    run.events(*[BranchFailed(DestinationKey.parse(1, gw2), 503)] * 4)  # alive: says nothing
    assert run.record(gw2).code == "AX"
    run.events(
        BranchFailed(DestinationKey.parse(1, gw1), 503, "a", replied=False),  # transport error
        BranchFailed(DestinationKey.parse(1, gw1), 408, "b", replied=False),  # timeout
    )
    assert run.record(gw1).code == "TX"  # trying, not probed in mode off
    run.events(BranchFailed(DestinationKey.parse(1, gw1), 500))  # a passive code
    assert run.record(gw1).code == "IX"
    failovers = f'sipdispatch_failovers_total{{set="1",uri="{gw1}"}}'
    assert run.metric(failovers) == 3
    assert run.metric(f'sipdispatch_failovers_total{{set="1",uri="{gw2}"}}') == 4


@pytest.mark.slow
async def test_calls_are_counted_until_their_bye_or_their_max_age(
    start: Callable[..., asyncio.Future[Running]],
) -> None:
    off = ProbingSpec.model_validate({"mode": "off"})
    run = await start(
        "1 sip:127.0.0.2:5060\n", probing=off, max_dialog_age=0.3, housekeeping_interval=0.05
    )
    gw = "sip:127.0.0.2:5060"
    for call_id in ("a", "b"):
        run.events(
            BranchStarted(DestinationKey.parse(1, gw), "INVITE", call_id),
            BranchAnswered(DestinationKey.parse(1, gw), 0.01, "INVITE", call_id),
        )
    assert run.calls(gw) == 2
    run.events(DialogEnded("a"))
    assert run.calls(gw) == 1
    await until(lambda: run.calls(gw) == 0, within=2.0)  # "b" never saw its BYE here
    assert run.server.health.traffic.dialogs == 0


@pytest.mark.slow
async def test_a_retry_after_drain_ends_on_time_without_a_probe(
    start: Callable[..., asyncio.Future[Running]],
) -> None:
    off = ProbingSpec.model_validate({"mode": "off"})
    run = await start("1 sip:127.0.0.2:5060\n", probing=off, housekeeping_interval=0.05)
    record = run.record("sip:127.0.0.2:5060")
    now = run.server.now()
    health.apply(record, health.Result.overloaded(0.3), run.server.health.probing.policy, now)
    assert record.code == "DR"
    await until(lambda: record.code == "AX", within=2.0)
    assert run.server.now() - now >= 0.3


@pytest.mark.slow
async def test_a_reload_keeps_learned_health_and_probes_the_new_table(
    start: Callable[..., asyncio.Future[Running]], make_peer: Callable[..., asyncio.Future[Peer]]
) -> None:
    down = await make_peer(status=None)
    added = await make_peer()
    run = await start(f"1 {down.uri}\n")
    await until(lambda: run.record(down.uri).code == "IP")
    record = run.record(down.uri)
    run.table_file.write_text(f"1 {down.uri}\n1 {added.uri}\n")
    await run.server.reload()
    assert run.record(down.uri) is record
    assert record.code == "IP"
    await until(lambda: run.record(added.uri).latency.count >= 2)
    down.status = 200
    await until(lambda: run.record(down.uri).code == "AP")


async def test_the_command_lines_probing_is_used_for_a_dispatcher_list(
    start: Callable[..., asyncio.Future[Running]],
) -> None:
    spec = ProbingSpec.model_validate(
        {"interval": 0.2, "timeout": 0.1, "mode": "inactive", "from": "sip:lb@test"}
    )
    run = await start("1 sip:127.0.0.2:5060\n", probing=spec)
    settings = run.server.health.probing
    assert (settings.interval, settings.timeout, settings.from_uri) == (0.2, 0.1, "sip:lb@test")
    assert run.server.health.probing.policy.mode is health.ProbingMode.INACTIVE
    assert run.record("sip:127.0.0.2:5060").code == "AX"  # not probed while active


@pytest.mark.parametrize(
    ("failover", "expected"),
    [
        ({}, {408, *range(500, 600)}),  # the default: 408 and 5xx
        ({"codes": ["502", "504"]}, {408, 502, 504}),
        ({"codes": ["5xx"], "onTimeout": False}, set(range(500, 600))),
        ({"codes": ["480", "5xx"]}, {408, 480, *range(500, 600)}),
    ],
)
def test_failover_codes_from_a_config(failover: dict[str, object], expected: set[int]) -> None:
    config = ProxyConfig.model_validate({"failover": failover})
    address = ("127.0.0.1", 5060)
    settings = core_settings(config, ProxySettings(), {"udp": address}, address)
    assert settings.failover_codes == frozenset(expected)


def test_a_dispatcher_list_fails_over_as_an_empty_failover_section_says() -> None:
    address = ("127.0.0.1", 5060)
    settings = core_settings(None, ProxySettings(), {"udp": address}, address)
    assert settings.failover_codes == frozenset({408, *range(500, 600)})
    assert (settings.max_attempts, settings.failover_on_timeout) == (3, True)


async def test_a_reload_applies_the_configs_new_failover_section(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = (
        "sets: [{{id: 1, destinations: [{{uri: 'sip:127.0.0.2:5060'}}]}}]\n"
        "failover: {{codes: [{codes}], maxAttempts: {attempts}}}\n"
        "probing: {{passiveCodes: [{codes}]}}\n"
    )
    path.write_text(text.format(codes="'502'", attempts=2))
    source = FileTableSource(path, kamailio_format=False, algorithm=4, default_set=None)
    server = ProxyServer(
        source, ProxySettings(listen=(f"udp:127.0.0.1:{free_udp_port()}",), control=None)
    )
    await server.start()
    try:
        assert server.engine is not None
        assert server.engine.core.settings.failover_codes == {408, 502}
        assert server.engine.core.settings.max_attempts == 2
        path.write_text(text.format(codes="'5xx', '480'", attempts=4))
        await server.reload()
        assert server.engine.core.settings.failover_codes == {408, 480, *range(500, 600)}
        assert server.engine.core.settings.max_attempts == 4
        assert server.health.probing.passive == {480, *range(500, 600)}  # so does marking
    finally:
        await server.close()


async def test_admin_set_state_is_logged_and_counted_like_other_changes(
    start: Callable[..., asyncio.Future[Running]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipdispatch.proxy.healthbook")
    off = ProbingSpec.model_validate({"mode": "off"})
    run = await start("1 sip:127.0.0.2:5060\n", probing=off)
    gw = "sip:127.0.0.2:5060"
    run.server.set_state(1, gw, "dx")
    run.server.set_state(1, gw, "dx")  # no change: nothing more
    run.server.set_state(1, gw, "ap")
    events = 'sipdispatch_destination_health_events_total{{event="{}",set="1",uri="' + gw + '"}}'
    assert run.metric(events.format("down")) == 1
    assert run.metric(events.format("up")) == 1
    changes = [r.getMessage() for r in caplog.records if f"destination {gw}:" in r.getMessage()]
    assert changes == [
        f"set 1 destination {gw}: AX -> DX (set-state: set-state dx) DOWN",
        f"set 1 destination {gw}: DX -> AP (set-state: set-state ap) UP",
    ]


async def test_changed_at_is_the_same_instant_in_every_answer(
    start: Callable[..., asyncio.Future[Running]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvloop reads its clock once per loop iteration, so under load the loop's time lags the
    # wall clock by up to an iteration; here it stands still while the wall clock runs on.
    # changedAt must depend on when the state changed, never on when one asks.
    off = ProbingSpec.model_validate({"mode": "off"})
    run = await start("1 sip:127.0.0.2:5060\n", probing=off)
    frozen = run.server.now()
    monkeypatch.setattr(run.server, "now", lambda: frozen)
    async with TestClient(TestServer(make_app(run.server, run.server.registry))) as client:
        answers = []
        for _ in range(2):
            response = await client.get("/v1/destinations")
            answers.append((await response.json())["sets"][0]["destinations"][0])
            await asyncio.sleep(0.02)
    assert answers[0]["changedAt"] == answers[1]["changedAt"]
    assert abs(answers[0]["changedAt"] - time.time()) < 5
