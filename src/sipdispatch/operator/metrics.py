"""The operator's Prometheus metrics and the endpoint that serves them.

On a registry of their own (never the global one: tests run several operators' worth of
metrics in one process). The reconciler counts its passes and writes; the leadership and the
watch's silence are read at scrape time, so a scrape shows them as they are now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

__all__ = ["OperatorMetrics", "serve"]


class _Live(Collector):
    def __init__(self, leading: Callable[[], bool], silence: Callable[[], float | None]) -> None:
        self._leading = leading
        self._silence = silence

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "sipdispatch_operator_leader",
            "1 when this operator holds the Lease and writes; 0 when it stands by",
            value=1.0 if self._leading() else 0.0,
        )
        silence = self._silence()
        if silence is not None:
            yield GaugeMetricFamily(
                "sipdispatch_operator_watch_silence_seconds",
                "Seconds since the API server last answered on the watched Lease",
                value=silence,
            )


class OperatorMetrics:
    """What the reconciler counts; ``live(...)`` adds the scrape-time gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "sipdispatch_operator_reconciles_total",
            "Reconciliations of one proxy's table and statuses, by result",
            ["result"],
            registry=self.registry,
        )
        self.table_writes = Counter(
            "sipdispatch_operator_table_writes_total",
            "Table ConfigMaps written (only when the rendering changed)",
            ["namespace", "proxy"],
            registry=self.registry,
        )
        self.table_written = Gauge(
            "sipdispatch_operator_table_written_timestamp_seconds",
            "When each table was last written (its age: time() - this)",
            ["namespace", "proxy"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "sipdispatch_operator_status_writes_total",
            "DispatcherSet status writes",
            registry=self.registry,
        )
        self.last_success = Gauge(
            "sipdispatch_operator_last_success_timestamp_seconds",
            "When a reconciliation last succeeded (rendered, and written where it changed)",
            registry=self.registry,
        )

    def live(self, leading: Callable[[], bool], silence: Callable[[], float | None]) -> None:
        self.registry.register(_Live(leading, silence))

    def reconciled(self, *, ok: bool, now: float) -> None:
        self.reconciles.labels("ok" if ok else "error").inc()
        if ok:
            self.last_success.set(now)

    def wrote_table(self, namespace: str, proxy: str, now: float) -> None:
        self.table_writes.labels(namespace, proxy).inc()
        self.table_written.labels(namespace, proxy).set(now)

    def text(self) -> bytes:
        return generate_latest(self.registry)


async def serve(url: str, metrics: OperatorMetrics) -> web.AppRunner:
    """Serve ``metrics`` at ``url`` (e.g. http://0.0.0.0:8081/metrics); stop with cleanup()."""
    where = urlsplit(url)

    async def scrape(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.text())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get(where.path or "/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, where.hostname or "0.0.0.0", where.port or 8081).start()
    return runner
