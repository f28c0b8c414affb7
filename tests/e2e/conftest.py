"""End-to-end tests with real SIP processes: sipp callers and gateways, Kamailio, the proxy.

The harness lives in tests/sipphelpers.py and its fixtures in tests/sipp_fixtures.py; both are
importable because pyproject.toml puts tests/ on sys.path (``pythonpath = ["tests"]``), which
test_harness_units.py checks.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from asterisk_fixtures import asterisk_install, asterisk_lab
from sipdispatchproc import SipdispatchProxy, hot_path_compiled

from sipp_fixtures import kamailio_bin, sipp_lab
from sipphelpers import REPO_ROOT, HarnessError

__all__ = [
    "asterisk_install",
    "asterisk_lab",
    "compiled_proxy_command",
    "kamailio_bin",
    "proxies",
    "proxy_build",
    "sipp_lab",
]


@pytest.fixture
def proxies() -> Iterator[list[SipdispatchProxy]]:
    """Proxies a test started (append them): stopped by PID when it ends."""
    started: list[SipdispatchProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="session")
def compiled_proxy_command() -> list[str]:
    """``sipdispatch-proxy`` of the production build: the hot path compiled with mypyc by
    ``hack/build-native`` (kept in .venv-native until a source changes, and its wheel in
    ~/.cache/sipdispatch/native for fresh checkouts of the same sources), as the container
    image and the benchmarks run it. The rest of the suite runs the development install."""
    built = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-native")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if built.returncode != 0:
        raise HarnessError(f"hack/build-native failed:\n{built.stderr[-3000:]}")
    proxy = built.stdout.strip().splitlines()[-1]
    if not hot_path_compiled(str(Path(proxy).parent / "python")):
        raise HarnessError(f"hack/build-native did not install a compiled sipdispatch: {proxy}")
    return [proxy]


@pytest.fixture(params=["development", "compiled"])
def proxy_build(request: pytest.FixtureRequest) -> list[str] | None:
    """Run a test on both builds: the development install (None: this environment's
    ``sipdispatch-proxy``) and the compiled production build."""
    if request.param == "development":
        return None
    command: list[str] = request.getfixturevalue("compiled_proxy_command")
    return command
