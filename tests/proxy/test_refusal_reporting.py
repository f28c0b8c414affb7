"""Refusals and missing hash keys: every one counted in /metrics, the log rate-limited."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from sipdispatch.proxy.events import HashKeyMissing, RequestRefused
from sipdispatch.proxy.metrics import ProxyMetrics
from sipdispatch.proxy.ratelog import LogThrottle

SOURCE = ("192.0.2.9", 5060)


def test_every_refusal_is_counted_by_reason_and_route() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry, lambda: None, lambda: 0)
    metrics.observe(
        [
            RequestRefused("untrusted-source", "", 403, "INVITE", "a", SOURCE),
            RequestRefused("untrusted-source", "", 403, "INVITE", "b", SOURCE),
            RequestRefused("route", "no-register", 403, "REGISTER", "c", SOURCE),
            HashKeyMissing(3, "d", SOURCE),
        ]
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    refused = "sipdispatch_requests_refused_total"
    assert value(refused, reason="untrusted-source", route="") == 2
    assert value(refused, reason="route", route="no-register") == 1
    assert value("sipdispatch_hash_key_missing_total", set="3") == 1


def test_one_line_per_kind_and_interval_saying_how_many_it_stands_for() -> None:
    throttle = LogThrottle(interval=10.0)
    assert throttle.admit("hairpin", 0.0) == 0
    assert [throttle.admit("hairpin", t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert throttle.admit("untrusted", 3.0) == 0  # each kind has its own interval
    assert throttle.admit("hairpin", 10.0) == 3  # the three that were not logged
    assert throttle.admit("hairpin", 11.0) is None
