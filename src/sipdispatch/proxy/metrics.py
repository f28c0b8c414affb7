"""Prometheus metrics, on a registry the caller injects (never the global one, so that tests
and several proxies in one process do not collide on names).

Counters are fed from the core's events, and with probe results and health events by the
health owner (``healthbook.py``); destination states are read from the live table at scrape
time by a collector, so a scrape always shows the table being served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sipdispatch.dispatch import health
from sipdispatch.dispatch.destinations import DestinationKey, DestinationTable
from sipdispatch.proxy.events import (
    BranchAnswered,
    BranchFailed,
    CoreEvent,
    HandlingFailed,
    HashKeyMissing,
    MessageRejected,
    NoDestination,
    ProbeReplyRejected,
    RequestRefused,
    RouteRefused,
)

__all__ = ["ProxyMetrics"]

STATES = ("AP", "AX", "TP", "TX", "IP", "IX", "DX", "DR")
#: probe round trips: loopback and LAN gateways in the first buckets, WAN trunks further up
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _TableCollector(Collector):
    def __init__(
        self, table: Callable[[], DestinationTable | None], in_flight: Callable[[], int]
    ) -> None:
        self._table = table
        self._in_flight = in_flight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "sipdispatch_destination_state",
            "1 for the destination's current two-letter state",
            labels=["set", "uri", "state"],
        )
        calls = GaugeMetricFamily(
            "sipdispatch_destination_active_calls", "Dialogs in progress", labels=["set", "uri"]
        )
        latency = GaugeMetricFamily(
            "sipdispatch_destination_latency_seconds",
            "Probe latency: moving estimate",
            labels=["set", "uri"],
        )
        timeouts = GaugeMetricFamily(
            "sipdispatch_destination_probe_timeouts", "Probes unanswered", labels=["set", "uri"]
        )
        active = GaugeMetricFamily(
            "sipdispatch_set_destinations_active", "Destinations taking new calls", labels=["set"]
        )
        total = GaugeMetricFamily(
            "sipdispatch_set_destinations", "Destinations in the set", labels=["set"]
        )
        table = self._table()
        if table is not None:
            for set_id, dest_set in table.sets.items():
                label = str(set_id)
                for target in dest_set.targets:
                    uri = target.destination.uri
                    code = target.runtime.health.code
                    for name in STATES:
                        state.add_metric([label, uri, name], 1.0 if name == code else 0.0)
                    calls.add_metric([label, uri], target.runtime.active_calls)
                    stats = target.runtime.health.latency
                    latency.add_metric([label, uri], stats.estimate or 0.0)
                    timeouts.add_metric([label, uri], stats.timeouts)
                active.add_metric([label], len(dest_set.eligible()))
                total.add_metric([label], len(dest_set.targets))
        in_flight = GaugeMetricFamily(
            "sipdispatch_transactions_in_flight", "Stateful proxy transactions alive"
        )
        in_flight.add_metric([], self._in_flight())
        yield from (state, calls, latency, timeouts, active, total, in_flight)


class _AdmissionCollector(Collector):
    """Admission control's counts, kept as plain integers where they happen (a flood must not
    pay for a labelled counter per dropped message) and read at scrape time."""

    def __init__(
        self,
        requests: Callable[[], Mapping[str, int]],
        connections: Callable[[], Mapping[str, int]],
        open_tcp: Callable[[], tuple[int, int]],
    ) -> None:
        self._requests = requests
        self._connections = connections
        self._open_tcp = open_tcp

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        requests = CounterMetricFamily(
            "sipdispatch_requests_limited",
            "Requests refused by admission control, by reason (source-rate, dialog-rate, "
            "banned, transactions)",
            labels=["reason"],
        )
        for reason, count in sorted(self._requests().items()):
            requests.add_metric([reason], count)
        connections = CounterMetricFamily(
            "sipdispatch_tcp_connections_closed",
            "TCP connections refused or closed by a limit, by reason (capacity, "
            "source-capacity, idle, unfinished-message)",
            labels=["reason"],
        )
        for reason, count in sorted(self._connections().items()):
            connections.add_metric([reason], count)
        open_now = GaugeMetricFamily(
            "sipdispatch_tcp_connections", "TCP connections open", labels=["direction"]
        )
        inbound, outbound = self._open_tcp()
        open_now.add_metric(["inbound"], inbound)
        open_now.add_metric(["outbound"], outbound)
        yield from (requests, connections, open_now)


class _ReadyCollector(Collector):
    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "sipdispatch_ready",
            "1 while this replica takes new requests (/readyz answers 200), 0 otherwise",
            value=1.0 if self._ready() else 0.0,
        )


class _Flush(Collector):
    """Yields nothing: brings the tallied counters up to date when the registry is read."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.metrics.flush()
        return iter(())


class ProxyMetrics:
    """Every metric of one proxy, registered on ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        table: Callable[[], DestinationTable | None],
        in_flight: Callable[[], int],
        failover_codes: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self.registry = registry
        self._table = table
        self._failover_codes = failover_codes
        # Registered first, so that a scrape brings the tallies up to date before the
        # counters they feed are read.
        self._answers: Callable[[], Mapping[DestinationKey, int]] | None = None
        registry.register(_Flush(self))
        self.answered = Counter(
            "sipdispatch_calls_answered",
            "Requests a destination answered with 2xx",
            ["set", "uri"],
            registry=registry,
        )
        self.failed = Counter(
            "sipdispatch_destination_failures",
            "Failure responses or timeouts (408) from destinations",
            ["set", "uri", "status"],
            registry=registry,
        )
        self.replies = Counter(
            "sipdispatch_destination_replies",
            "Final replies from destinations by class",
            ["class"],
            registry=registry,
        )
        self.rejected = Counter(
            "sipdispatch_messages_rejected",
            "Malformed or refused messages, by the status answered (or would have been)",
            ["status"],
            registry=registry,
        )
        self.no_destination = Counter(
            "sipdispatch_no_destination",
            "Requests that found no eligible destination (503)",
            registry=registry,
        )
        self.failovers = Counter(
            "sipdispatch_failovers",
            "Branches ended by a failover trigger (configured code, timeout, transport error): "
            "the request moved on to the next destination when one was left",
            ["set", "uri"],
            registry=registry,
        )
        self.probes = Counter(
            "sipdispatch_probes",
            "OPTIONS probes completed, by result (success, failure, timeout, overloaded)",
            ["set", "result"],
            registry=registry,
        )
        self.probe_latency = Histogram(
            "sipdispatch_probe_latency_seconds",
            "Round trip of answered OPTIONS probes",
            ["set"],
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.health_events = Counter(
            "sipdispatch_destination_health_events",
            "Destinations becoming eligible for new calls (up) or not (down)",
            ["set", "uri", "event"],
            registry=registry,
        )
        self.probe_replies_rejected = Counter(
            "sipdispatch_probe_replies_rejected",
            "Replies to OPTIONS probes dropped: they came from another address or transport "
            "than the probed destination's",
            ["set"],
            registry=registry,
        )
        self.routes_refused = Counter(
            "sipdispatch_routes_refused",
            "In-dialog requests whose signed Route was refused, by reason: foreign, unsigned, "
            "signature, expired, direction (403), gone (404: the gateway left the table)",
            ["reason"],
            registry=registry,
        )
        self.route_keys = Gauge(
            "sipdispatch_route_keys",
            "1 for each key signed routes are checked with, by fingerprint (logged with each "
            "reload): use=signing for the one new routes are signed with, accepting for others",
            ["fingerprint", "use"],
            registry=registry,
        )
        self.over_limit = Counter(
            "sipdispatch_messages_over_limit",
            "Messages refused before parsing, by the limit exceeded (message-size, "
            "header-count, line-length, via-count, route-count, record-route-count)",
            ["limit"],
            registry=registry,
        )
        self.handling_failed = Counter(
            "sipdispatch_handling_failures",
            "Messages or timers whose handling raised (a bug): dropped, the proxy went on",
            ["stage"],
            registry=registry,
        )
        self.refused = Counter(
            "sipdispatch_requests_refused",
            "Requests the proxy answered itself instead of dispatching them, by reason: "
            "routing's (route, untrusted-source, hairpin, unrouted, missing-hash-key, with the "
            "route that refused them) and the request policy's (user-agent, control-character, "
            "method, loop, domain; route empty)",
            ["reason", "route"],
            registry=registry,
        )
        self.hash_key_missing = Counter(
            "sipdispatch_hash_key_missing",
            "Requests without their set's hash key, hashed by Call-ID instead",
            ["set"],
            registry=registry,
        )
        self._probe_children: dict[tuple[int, health.Outcome], tuple[Counter, Histogram]] = {}
        # Per destination (and status): every call counts here, so the labelled children are
        # looked up once, not formatted per event.
        self._answered_children: dict[DestinationKey, Counter] = {}
        self._failed_children: dict[tuple[DestinationKey, int], tuple[Counter, Counter]] = {}
        self._failover_children: dict[DestinationKey, Counter] = {}
        self._replies_2xx = self.replies.labels("2xx")
        registry.register(_TableCollector(table, in_flight))
        # The table's age and whether the newest change was refused: a proxy that keeps
        # serving an old table (the last good state) must still be alertable.
        self.table_changes = Counter(
            "sipdispatch_table_changes",
            "Tables read from the source (file, reload, Kubernetes), by result: applied, or "
            "rejected (the previous table kept serving)",
            ["result"],
            registry=registry,
        )
        self.table_applied_at = Gauge(
            "sipdispatch_table_last_applied_timestamp_seconds",
            "Unix time the table being served was applied (its age: time() - this)",
            registry=registry,
        )
        self.table_rejected_at = Gauge(
            "sipdispatch_table_last_rejected_timestamp_seconds",
            "Unix time a table change was last rejected; 0 if none was. Later than "
            "sipdispatch_table_last_applied_timestamp_seconds: the newest table is not served",
            registry=registry,
        )
        for result in ("applied", "rejected"):
            self.table_changes.labels(result)

    def table_applied(self, now: float) -> None:
        """A table is now served (``now``: Unix time)."""
        self.table_changes.labels("applied").inc()
        self.table_applied_at.set(now)

    def table_rejected(self, now: float) -> None:
        """A table change could not be used; the previous table keeps serving."""
        self.table_changes.labels("rejected").inc()
        self.table_rejected_at.set(now)

    def watch_readiness(self, ready: Callable[[], bool]) -> None:
        """Export ``ready()`` (what /readyz answers) as sipdispatch_ready, read at each scrape."""
        self.registry.register(_ReadyCollector(ready))

    def watch_admission(
        self,
        requests: Callable[[], Mapping[str, int]],
        connections: Callable[[], Mapping[str, int]],
        open_tcp: Callable[[], tuple[int, int]],
    ) -> None:
        """Export admission control's counts, read from these at each scrape."""
        self.registry.register(_AdmissionCollector(requests, connections, open_tcp))

    def _failed_over(self, event: BranchFailed) -> bool:
        """Whether a failed branch was a failover trigger (a parallel set forks, not fails over;
        a branch ended by a CANCEL is not counted: the caller hung up)."""
        if event.cancelled or event.status not in self._failover_codes():
            return False
        table = self._table()
        dest_set = table.sets.get(event.destination.set_id) if table is not None else None
        return dest_set is None or dest_set.algorithm != "parallel"

    def probe(self, set_id: int, result: health.Result) -> None:
        # Thousands of probes a second: the labelled children are looked up once.
        key = (set_id, result.outcome)
        children = self._probe_children.get(key)
        if children is None:
            label = str(set_id)
            children = (
                self.probes.labels(label, result.outcome.value),
                self.probe_latency.labels(label),
            )
            self._probe_children[key] = children
        children[0].inc()
        if result.rtt is not None:
            children[1].observe(result.rtt)

    def _failed(self, event: BranchFailed) -> None:
        key = event.destination
        children = self._failed_children.get((key, event.status))
        if children is None:
            status = str(event.status)
            children = (
                self.failed.labels(*self._labels(key), status),
                self.replies.labels(f"{status[0]}xx"),
            )
            self._failed_children[key, event.status] = children
        children[0].inc()
        children[1].inc()
        if self._failed_over(event):
            failover = self._failover_children.get(key)
            if failover is None:
                failover = self._failover_children[key] = self.failovers.labels(*self._labels(key))
            failover.inc()

    def _labels(self, key: DestinationKey) -> tuple[str, str]:
        """The ``set`` and ``uri`` labels of a destination: its URI as the table being served
        spells it (as the state gauges do) when it is first counted, else its key's URI."""
        table = self._table()
        dest_set = table.sets.get(key.set_id) if table is not None else None
        for target in dest_set.targets if dest_set is not None else ():
            if target.identity == key:
                return str(key.set_id), target.destination.uri
        return str(key.set_id), key.uri

    def count_answers(self, take: Callable[[], Mapping[DestinationKey, int]]) -> None:
        """Count the answers ``take`` tallies (compiled, per call: ``traffic.EventFeed``) when
        the metrics are read, instead of one event at a time."""
        self._answers = take

    def flush(self) -> None:
        """Bring the counters fed by tallies up to date (before any read of them)."""
        if self._answers is None:
            return
        total = 0
        for key, count in self._answers().items():
            self._answered_child(key).inc(count)
            total += count
        if total:
            self._replies_2xx.inc(total)

    def _answered_child(self, key: DestinationKey) -> Counter:
        answered = self._answered_children.get(key)
        if answered is None:
            answered = self.answered.labels(*self._labels(key))
            self._answered_children[key] = answered
        return answered

    def keys_in_use(self, fingerprints: Sequence[str]) -> None:
        """The route keys now in use, signing key first (at start and after each reload)."""
        self.route_keys.clear()
        for index, fingerprint in enumerate(fingerprints):
            self.route_keys.labels(fingerprint, "accepting" if index else "signing").set(1)

    def health_event(self, set_id: int, uri: str, event: health.Event) -> None:
        name = "up" if isinstance(event, health.DestinationUp) else "down"
        self.health_events.labels(str(set_id), uri, name).inc()

    def observe(self, events: Sequence[CoreEvent]) -> None:
        for event in events:
            if isinstance(event, BranchAnswered):
                self._answered_child(event.destination).inc()
                self._replies_2xx.inc()
            elif isinstance(event, BranchFailed):
                self._failed(event)
            elif isinstance(event, MessageRejected):
                self.rejected.labels(str(event.status)).inc()
                if event.limit:
                    self.over_limit.labels(event.limit).inc()
                if event.rule:
                    self.refused.labels(event.rule, "").inc()
            elif isinstance(event, HandlingFailed):
                self.handling_failed.labels(event.stage).inc()
            elif isinstance(event, NoDestination):
                self.no_destination.inc()
            elif isinstance(event, ProbeReplyRejected):
                self.probe_replies_rejected.labels(str(event.destination.set_id)).inc()
            elif isinstance(event, RouteRefused):
                self.routes_refused.labels(event.reason).inc()
            elif isinstance(event, RequestRefused):
                self.refused.labels(event.cause, event.route).inc()
            elif isinstance(event, HashKeyMissing):
                self.hash_key_missing.labels(str(event.set_id)).inc()
