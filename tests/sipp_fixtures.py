"""pytest fixtures for sipp-driven tests (see tests/sipphelpers.py for the harness).

Import them into a conftest.py of the directory whose tests use them, as
``tests/e2e/conftest.py`` does:

    from sipp_fixtures import kamailio_bin, sipp_lab

- ``sipp_lab``: a :class:`sipphelpers.SippLab` writing into this test's tmp_path; every
  gateway, caller and proxy it made is stopped by PID when the test ends.
- ``kamailio_bin``: path of the kamailio binary; the test is skipped, saying why, when it is
  not installed (Kamailio is the comparison peer, not a dependency of the project).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sipphelpers import SippLab, kamailio_binary, sipp_binary


@pytest.fixture
def sipp_lab(tmp_path: Path) -> Iterator[SippLab]:
    sipp_binary()  # fail (not skip) at once if sipp is missing: hack/bootstrap installs it
    lab = SippLab(tmp_path / "sipp")
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def kamailio_bin() -> str:
    path = kamailio_binary()
    if path is None:
        pytest.skip(
            "kamailio binary not found: this test uses Kamailio as the comparison peer "
            "(apt-get install kamailio); it is not a dependency of sipdispatch"
        )
    return path
