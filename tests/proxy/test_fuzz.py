"""The fuzz properties of ``fuzzing.py``, CI-sized: a few hundred examples each, a few
seconds in all. The long run is ``hack/fuzz`` (docs/development.md)."""

from __future__ import annotations

import pytest
from fuzzing import PROPERTIES, fuzz_test

#: examples per property in the test suite
CI_EXAMPLES = 250


@pytest.mark.parametrize("name", PROPERTIES)
def test_nothing_raises_and_every_refusal_is_answered_or_counted(name: str) -> None:
    fuzz_test(name, CI_EXAMPLES)()
