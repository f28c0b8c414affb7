"""Fixtures for the scenarios with real Asterisk boxes behind the proxy.

``asterisk_lab`` gives a test an :class:`AsteriskLab`: boxes on their own loopback addresses
(127.0.0.21, .22, ...), sipp callers and carriers (127.0.0.31, ...), the proxy; everything
it started is stopped by PID when the test ends. The Asterisk build comes from
``hack/asterisk`` (cached; ``hack/test`` builds it before the tests run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from asteriskbox import asterisk_prefix
from asterisklab import AsteriskLab

from sipphelpers import sipp_binary


@pytest.fixture(scope="session")
def asterisk_install() -> Path:
    return asterisk_prefix()


@pytest.fixture
def asterisk_lab(tmp_path: Path, asterisk_install: Path) -> Iterator[AsteriskLab]:
    sipp_binary()  # fail (not skip) at once if sipp is missing: hack/bootstrap installs it
    lab = AsteriskLab(asterisk_install, tmp_path)
    try:
        yield lab
    finally:
        lab.close()
