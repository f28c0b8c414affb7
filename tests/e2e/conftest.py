"""End-to-end tests with real SIP processes: sipp callers and gateways, Kamailio, the proxy.

The harness lives in tests/sipphelpers.py and its fixtures in tests/sipp_fixtures.py; both are
importable because pyproject.toml puts tests/ on sys.path (``pythonpath = ["tests"]``), which
test_harness_units.py checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sipdispatchproc import SipdispatchProxy

from sipp_fixtures import kamailio_bin, sipp_lab

__all__ = ["kamailio_bin", "proxies", "sipp_lab"]


@pytest.fixture
def proxies() -> Iterator[list[SipdispatchProxy]]:
    """Proxies a test started (append them): stopped by PID when it ends."""
    started: list[SipdispatchProxy] = []
    yield started
    for proxy in started:
        proxy.stop()
