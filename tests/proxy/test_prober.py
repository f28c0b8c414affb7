"""The prober: its pure schedule (time moved by hand), what a reply means, and the asyncio shell
probing real loopback SIP make_peer through the proxy core's client transactions."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pytest
from loopback import Peer, free_udp_port, until

from sipdispatch.dispatch import health
from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable, TargetIndex
from sipdispatch.dispatch.health import HealthPolicy, Outcome, ProbingMode
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig
from sipdispatch.proxy.core import CoreSettings, Signer
from sipdispatch.proxy.engine import Engine
from sipdispatch.proxy.healthbook import HealthBook, HealthChange
from sipdispatch.proxy.prober import Prober, ProbeScheduler, classify
from sipdispatch.proxy.settings import ProbeSettings
from sipdispatch.proxy.transport.udp import open_udp
from sipdispatch.sip.transaction import Timers

# --- the schedule ------------------------------------------------------------------


def keys(n: int) -> list[str]:
    return [f"1:sip:10.0.{i // 250}.{i % 250}:5060;transport=udp" for i in range(n)]


def run_schedule(
    sched: ProbeScheduler[str], until: float, step: float = 0.01, start: float = 0.0
) -> dict[str, list[float]]:
    """Move time by ``step`` up to ``until``; when each key came due."""
    seen: dict[str, list[float]] = {}
    now = start
    while now <= until:
        for key in sched.pop_due(now):
            seen.setdefault(key, []).append(now)
        now = round(now + step, 6)
    return seen


def test_every_key_comes_due_every_interval_plus_or_minus_the_jitter() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(5.0, 0.2, random.Random(1))
    sched.track(keys(200), 0.0)
    seen = run_schedule(sched, 60.0)
    assert len(seen) == 200
    for times in seen.values():
        assert times[0] < 5.0  # first turn within one interval
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(4.0 - 0.011 <= gap <= 6.0 + 0.011 for gap in gaps), gaps
        assert 10 <= len(times) <= 15
    # The jitter is really drawn: gaps are not all the same.
    all_gaps = {round(b - a, 2) for t in seen.values() for a, b in itertools.pairwise(t)}
    assert len(all_gaps) > 50


def test_without_jitter_each_key_keeps_an_exact_period() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(2.0, 0.0, random.Random(2))
    sched.track(keys(10), 0.0)
    for times in run_schedule(sched, 20.0, step=0.001).values():
        gaps = {round(b - a, 3) for a, b in itertools.pairwise(times)}
        assert gaps <= {2.0, 1.999, 2.001}


def test_keys_that_appear_together_are_spread_evenly_over_one_interval() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(5.0, 0.2, random.Random(3))
    sched.track(keys(1000), 100.0)
    firsts = sorted(sched.due_at(k) or 0.0 for k in keys(1000))
    assert firsts[0] >= 100.0
    assert firsts[-1] < 105.0
    # Stratified: each tenth of the interval holds exactly a tenth of the keys.
    tenths = Counter(int((at - 100.0) / 0.5) for at in firsts)
    assert set(tenths.values()) == {100}


def test_no_synchronized_bursts_over_many_intervals() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(5.0, 0.2, random.Random(4))
    sched.track(keys(1000), 0.0)
    seen = run_schedule(sched, 120.0)
    buckets = Counter(int(at / 0.1) for times in seen.values() for at in times)
    mean = sum(buckets.values()) / (120.0 / 0.1)
    assert mean == pytest.approx(20, rel=0.1)  # 1000 keys / 5 s, per 100 ms
    # Poisson-like at worst (about +5 sigma), never a burst of a whole set.
    assert max(buckets.values()) <= 2.5 * mean, buckets.most_common(3)


def test_tracking_adds_new_keys_forgets_old_ones_and_keeps_the_phase_of_the_rest() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(5.0, 0.2, random.Random(5))
    first = keys(4)
    sched.track(first, 0.0)
    kept = {k: sched.due_at(k) for k in first[:3]}
    sched.track([*first[:3], "1:sip:new:5060;transport=udp"], 1.0)
    assert {k: sched.due_at(k) for k in first[:3]} == kept
    assert first[3] not in sched
    new_due = sched.due_at("1:sip:new:5060;transport=udp")
    assert new_due is not None
    assert 1.0 <= new_due < 6.0
    seen = run_schedule(sched, 30.0)
    assert first[3] not in seen
    assert len(sched) == 4


def test_forgotten_keys_do_not_pile_up_in_the_heap() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(1.0, 0.2, random.Random(6))
    for generation in range(50):
        sched.track([f"{generation}:{k}" for k in keys(100)], float(generation))
        sched.pop_due(float(generation))
    assert len(sched) == 100
    assert len(sched._heap) <= 2 * 100 + 64


def test_a_stalled_loop_does_not_fire_every_missed_turn() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(1.0, 0.1, random.Random(7))
    sched.track(keys(50), 0.0)
    due = sched.pop_due(100.0)  # a 100 s stall
    assert sorted(due) == sorted(keys(50))
    assert sched.pop_due(100.0) == []
    nxt = sched.next_due()
    assert nxt is not None
    assert nxt >= 100.9


def test_changing_the_interval_respreads_every_key() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(10.0, 0.2, random.Random(8))
    sched.track(keys(100), 0.0)
    sched.configure(1.0, 0.2, 3.0)
    dues = [sched.due_at(k) or 0.0 for k in keys(100)]
    assert all(3.0 <= at < 4.0 for at in dues)
    sched.configure(1.0, 0.2, 50.0)  # no change: nothing moves
    assert [sched.due_at(k) for k in keys(100)] == dues


@pytest.mark.parametrize(("interval", "jitter"), [(0.0, 0.1), (-1.0, 0.1), (1.0, 1.0), (1, -0.1)])
def test_bad_schedules_are_refused(interval: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="probe"):
        ProbeScheduler(interval, jitter)


def test_ten_thousand_destinations_every_five_seconds_is_one_heap_operation_per_probe() -> None:
    sched: ProbeScheduler[str] = ProbeScheduler(5.0, 0.2, random.Random(9))
    sched.track(keys(10_000), 0.0)
    started = time.perf_counter()
    seen = run_schedule(sched, 15.0, step=0.005)
    elapsed = time.perf_counter() - started
    total = sum(len(t) for t in seen.values())
    assert 29_000 <= total <= 31_500  # 3 intervals of 10,000
    assert len(sched._heap) == 10_000  # one entry per key, nothing stale
    print(f"schedule of 10,000 destinations over 15 s: {elapsed * 1000:.0f} ms of CPU")


# --- what a reply means ------------------------------------------------------------

SETTINGS = ProbeSettings.from_spec(ProbingSpec.model_validate({"replyCodes": ["2xx", "404"]}))


@pytest.mark.parametrize(
    ("status", "rtt", "retry_after", "outcome"),
    [
        (200, 0.01, None, Outcome.SUCCESS),
        (202, 0.01, None, Outcome.SUCCESS),
        (404, 0.01, None, Outcome.SUCCESS),  # accepted by configuration
        (403, 0.01, None, Outcome.FAILURE),
        (500, 0.01, None, Outcome.FAILURE),
        (503, 0.01, None, Outcome.FAILURE),
        (503, 0.01, 30.0, Outcome.OVERLOADED),
        (408, 0.01, None, Outcome.FAILURE),  # a real 408 reply: it answered, badly
        (408, None, None, Outcome.TIMEOUT),  # no reply in time
        (503, None, None, Outcome.FAILURE),  # transport error
    ],
)
def test_classify(
    status: int, rtt: float | None, retry_after: float | None, outcome: Outcome
) -> None:
    result = classify(status, rtt, retry_after, SETTINGS)
    assert result.outcome is outcome
    assert result.rtt == rtt
    if outcome is Outcome.TIMEOUT:
        assert result.waited == SETTINGS.timeout
    if outcome is Outcome.OVERLOADED:
        assert result.retry_after == retry_after


def test_a_503_with_retry_after_drains_even_when_503_is_accepted() -> None:
    settings = ProbeSettings.from_spec(ProbingSpec.model_validate({"replyCodes": ["2xx", "5xx"]}))
    assert classify(503, 0.01, 5.0, settings).outcome is Outcome.OVERLOADED
    assert classify(503, 0.01, None, settings).outcome is Outcome.SUCCESS


def test_settings_from_a_probing_section() -> None:
    spec = ProbingSpec.model_validate(
        {
            "mode": 2,
            "interval": 3,
            "timeout": 1,
            "jitter": 0.1,
            "failureThreshold": 4,
            "successThreshold": 1,
            "replyCodes": ["200", "4xx"],
            "from": "sip:lb@example.com",
        }
    )
    settings = ProbeSettings.from_spec(spec)
    assert (settings.interval, settings.timeout, settings.jitter) == (3.0, 1.0, 0.1)
    assert settings.from_uri == "sip:lb@example.com"
    assert settings.accepted == frozenset({200, *range(400, 500)})
    assert settings.policy == HealthPolicy(4, 1, ProbingMode.INACTIVE)


# --- the asyncio shell against real loopback make_peer --------------------------------


@dataclass
class Lab:
    engine: Engine
    book: HealthBook
    prober: Prober
    results: list[HealthChange]  # every probe result applied
    policy: HealthPolicy

    def record(self, uri: str) -> health.HealthRecord:
        return self.engine.table.find(1, uri).runtime.health

    def codes(self, uri: str) -> list[str]:
        """The distinct codes a destination went through, from the results applied."""
        out: list[str] = []
        for r in self.results:
            if r.target.destination.uri != uri:
                continue
            for code in (r.previous, r.code):
                if not out or out[-1] != code:
                    out.append(code)
        return out

    def rebuild(self, dests: Sequence[Destination]) -> None:
        config = TableConfig((SetConfig(1, tuple(dests)),))
        loop = asyncio.get_running_loop()
        table = DestinationTable.build(config, self.engine.table, loop.time(), policy=self.policy)
        self.engine.swap_table(table)
        self.book.follow(table)


@pytest.fixture
async def lab_factory() -> AsyncIterator[Callable[..., asyncio.Future[Lab]]]:
    started: list[tuple[Engine, asyncio.Task[None]]] = []

    async def make(
        dests: Sequence[Destination],
        *,
        interval: float = 0.1,
        probe_timeout: float = 0.08,
        jitter: float = 0.2,
        failures: int = 2,
        successes: int = 2,
        accepted: frozenset[int] = frozenset(range(200, 300)),
        from_uri: str = "sip:prober@test.invalid",
        mode: ProbingMode = ProbingMode.ALL,
    ) -> Lab:
        loop = asyncio.get_running_loop()
        policy = HealthPolicy(failures, successes, mode)
        settings = ProbeSettings(
            interval, probe_timeout, jitter, from_uri, accepted, policy, frozenset(), 300.0
        )
        port = free_udp_port()
        config = TableConfig((SetConfig(1, tuple(dests)),))
        table = DestinationTable.build(config, None, loop.time(), policy=policy)
        core = CoreSettings(
            local={"udp": ("127.0.0.1", port)},
            advertise=("127.0.0.1", port),
            timers=Timers(t1=0.02, t2=0.16, t4=0.2),
        )
        book = HealthBook(settings, clock=loop.time, max_dialog_age=3600.0)
        book.follow(table)
        results: list[HealthChange] = []
        book.watchers.append(results.append)
        engine = Engine(core, table, Signer(b"k" * 32), book.observe)
        engine.udp = await open_udp("127.0.0.1", port, engine)
        prober = book.probes = Prober(engine, book, rng=random.Random(0))
        started.append((engine, loop.create_task(prober.run())))
        return Lab(engine, book, prober, results, policy)

    yield make  # type: ignore[misc]
    for engine, task in started:
        task.cancel()
        engine.close()
        if engine.udp is not None:
            engine.udp.close()


def dest(uri: str, **fields: object) -> Destination:
    return Destination.create(1, uri, **fields)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_an_answering_destination_stays_ap_and_feeds_latency(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    peer = await make_peer()
    lab = await lab_factory([dest(peer.uri)])
    await asyncio.sleep(0.65)
    record = lab.record(peer.uri)
    assert record.code == "AP"
    # Every 0.1 s +/- 20 % over 0.65 s (the first within the first interval).
    assert 4 <= len(peer.options()) <= 9, len(peer.options())
    assert record.latency.count >= 4
    assert 0 < record.latency.mean < 0.05
    assert record.latency.timeouts == 0
    assert all("From: <sip:prober@test.invalid>" in m for m in peer.options())
    assert lab.prober.in_flight <= 1


@pytest.mark.slow
async def test_a_silent_destination_goes_tp_then_ip_and_comes_back_ax_then_ap(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    peer = await make_peer(status=None)
    other = await make_peer()
    lab = await lab_factory([dest(peer.uri), dest(other.uri)], failures=3, successes=3)
    await until(lambda: lab.record(peer.uri).code == "IP")
    assert lab.record(peer.uri).latency.timeouts == 3
    assert lab.record(peer.uri).reason == "3 consecutive failures (OPTIONS timeout)"
    peer.status = 200  # the gateway is back
    await until(lambda: lab.record(peer.uri).code == "AP")
    assert lab.codes(peer.uri) == ["AP", "TP", "IP", "AX", "AP"]
    events = [r.event for r in lab.results if r.event is not None]
    assert [type(e) for e in events] == [health.DestinationDown, health.DestinationUp]
    assert lab.codes(other.uri) == ["AP"]


@pytest.mark.slow
async def test_a_probe_still_out_when_the_next_is_due_delays_it_but_skips_no_turn(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    # A timeout as long as the interval (the benchmark's 1 s and 1 s): each probe's turn comes
    # as the previous one times out. It goes out when that one ends, not one interval later.
    peer = await make_peer(status=None)
    lab = await lab_factory([dest(peer.uri)], interval=0.1, probe_timeout=0.1, jitter=0.0)
    await asyncio.sleep(2.05)
    probes = {m.split("Call-ID:", 1)[1].split("\r\n", 1)[0] for m in peer.options()}
    # 20 turns; skipping each turn that found its probe still out sent 11 or 12
    assert len(probes) >= 18, len(probes)
    assert lab.prober.in_flight <= 1


@pytest.mark.slow
async def test_a_503_with_retry_after_drains_until_it_elapses(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    peer = await make_peer(status=503, extra="Retry-After: 1\r\n")
    lab = await lab_factory([dest(peer.uri)])
    await until(lambda: lab.record(peer.uri).code == "DR")
    drained_at = time.monotonic()
    assert not lab.record(peer.uri).eligible
    peer.status, peer.extra = 200, ""
    await until(lambda: lab.record(peer.uri).code == "AP")
    assert time.monotonic() - drained_at >= 0.8  # not before Retry-After elapsed
    assert lab.codes(peer.uri)[:2] == ["AP", "DR"]


@pytest.mark.slow
async def test_a_disabled_destination_is_never_probed(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    disabled = await make_peer()
    active = await make_peer()
    lab = await lab_factory([dest(disabled.uri, disabled=True), dest(active.uri)])
    await asyncio.sleep(0.5)
    assert disabled.options() == []
    assert len(active.options()) >= 3
    assert lab.record(disabled.uri).code == "DX"


@pytest.mark.slow
async def test_ping_from_and_accepted_reply_codes(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    accepted = await make_peer(status=404)
    refused = await make_peer(status=403)
    lab = await lab_factory(
        [dest(accepted.uri, attrs={"ping_from": "sip:health@lb.example"}), dest(refused.uri)],
        accepted=frozenset({*range(200, 300), 404}),
    )
    await until(lambda: lab.record(refused.uri).code == "IP")
    assert lab.record(accepted.uri).code == "AP"
    assert "OPTIONS 403" in lab.record(refused.uri).reason
    assert all("From: <sip:health@lb.example>" in m for m in accepted.options())
    assert all("From: <sip:prober@test.invalid>" in m for m in refused.options())


@pytest.mark.slow
async def test_results_land_in_the_table_being_served_after_a_reload(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    kept = await make_peer(status=None)
    dropped = await make_peer()
    added = await make_peer()
    lab = await lab_factory([dest(kept.uri), dest(dropped.uri)], failures=5)
    await until(lambda: lab.record(kept.uri).failures >= 2)
    record = lab.record(kept.uri)
    lab.rebuild([dest(kept.uri), dest(added.uri)])
    assert lab.record(kept.uri) is record  # carried by key
    await until(lambda: lab.record(kept.uri).code == "IP")  # the streak went on
    await until(lambda: len(added.options()) >= 2)
    seen = len(dropped.options())
    await asyncio.sleep(0.3)
    assert len(dropped.options()) <= seen + 1  # at most one already in flight
    assert lab.record(added.uri).code == "AP"


@pytest.mark.slow
async def test_the_interval_follows_the_settings(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    peer = await make_peer()
    lab = await lab_factory([dest(peer.uri)], interval=5.0, probe_timeout=0.08)
    await asyncio.sleep(0.2)
    assert len(peer.options()) <= 1
    old = lab.book.probing
    lab.book.configure(dataclasses.replace(old, interval=0.05, timeout=0.04))
    await until(lambda: len(peer.options()) >= 5, within=2.0)


@pytest.mark.slow
async def test_a_destination_without_a_listener_for_its_transport_fails_at_once(
    lab_factory: Callable[..., asyncio.Future[Lab]],
) -> None:
    # Only UDP is open: the core completes the probe before ``Engine.probe`` returns.
    uri = "sip:127.0.0.1:9;transport=tcp"
    lab = await lab_factory([dest(uri)], failures=2)
    await until(lambda: lab.record(uri).code == "IP")
    assert "transport error" in lab.record(uri).reason
    assert lab.prober.in_flight == 0


@pytest.mark.slow
async def test_mode_inactive_probes_only_inactive_destinations(
    make_peer: Callable[..., asyncio.Future[Peer]], lab_factory: Callable[..., asyncio.Future[Lab]]
) -> None:
    healthy = await make_peer()
    lab = await lab_factory([dest(healthy.uri)], mode=ProbingMode.INACTIVE)
    await asyncio.sleep(0.35)
    assert healthy.options() == []
    assert lab.record(healthy.uri).code == "AX"  # Kamailio's AX: active, not probed
    lab.engine.table.set_state(1, healthy.uri, "ip", 0.0)
    await until(lambda: lab.record(healthy.uri).eligible)
    assert lab.codes(healthy.uri) == ["IP", "AX"]  # coming up, then active-not-probed
    assert len(healthy.options()) == 2


def test_target_index_follows_the_table_object() -> None:
    uris = ["sip:10.0.0.1", "sip:10.0.0.2;transport=tcp"]
    table = DestinationTable.build(
        TableConfig((SetConfig(1, tuple(dest(u) for u in uris)),)), None, 0.0
    )
    index = TargetIndex()
    assert index.refresh(table)
    assert not index.refresh(table)
    target = table.find(1, uris[1])
    key = DestinationKey(1, "sip:10.0.0.2:5060;transport=tcp")
    assert index.get(key) is target
    assert index.get(target.identity) is target
    assert str(key) == target.key
    assert list(index.keys()) == [DestinationKey(1, "sip:10.0.0.1:5060;transport=udp"), key]
    assert index.get(DestinationKey(2, key.uri)) is None
    assert index.get(DestinationKey.parse(1, "sip:10.0.0.3")) is None
