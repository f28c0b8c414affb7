"""Prometheus gauges of DNS names, read from the table at scrape time: which names resolve,
which serve a stale answer and which have no address (an alert's ``state="failed"``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.names import NameState

__all__ = ["watch_names"]


class _NameCollector(Collector):
    def __init__(self, table: Callable[[], DestinationTable | None]) -> None:
        self._table = table

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "sipdispatch_dns_name_state",
            "1 for the current state of a destination named by DNS (resolved, stale, failed, "
            "pending)",
            labels=["set", "name", "state"],
        )
        addresses = GaugeMetricFamily(
            "sipdispatch_dns_name_addresses",
            "Addresses a destination named by DNS resolves to (each a destination)",
            labels=["set", "name"],
        )
        table = self._table()
        for name in table.names if table is not None else ():
            labels = [str(name.set_id), name.uri]
            for each in NameState:
                state.add_metric([*labels, each.value], 1.0 if each is name.state else 0.0)
            addresses.add_metric(labels, len(name.addresses))
        yield from (state, addresses)


def watch_names(registry: CollectorRegistry, table: Callable[[], DestinationTable | None]) -> None:
    """Register the DNS gauges of the table ``table()`` returns at each scrape."""
    registry.register(_NameCollector(table))
