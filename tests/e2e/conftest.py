"""End-to-end tests with real SIP processes: sipp callers and gateways, Kamailio, the proxy.

The harness lives in tests/sipphelpers.py and its fixtures in tests/sipp_fixtures.py.  pytest
puts a test file's own directory on sys.path (rootdir conftest aside), which here is
tests/e2e, so tests/ is added explicitly to import them.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS_DIR = str(Path(__file__).resolve().parent.parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from sipp_fixtures import kamailio_bin, sipp_lab  # noqa: E402

__all__ = ["kamailio_bin", "sipp_lab"]
