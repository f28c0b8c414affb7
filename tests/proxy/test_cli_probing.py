"""``sipdispatch-proxy``'s probing flags: validated like a config file's probing section."""

from __future__ import annotations

import pytest

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.dispatch.health import ProbingMode
from sipdispatch.proxy import cli


def probing(*flags: str) -> ProbingSpec:
    return cli._probing(cli.build_parser().parse_args(["--dispatcher-list", "x", *flags]))


def test_flags_become_the_probing_settings() -> None:
    spec = probing(
        "--probe-interval=0.5",
        "--probe-timeout=0.4",
        "--probe-jitter=0.1",
        "--probe-mode=2",
        "--failure-threshold=4",
        "--success-threshold=1",
        "--probe-from=sip:lb@example.com",
        "--probe-codes=2xx, 404",
    )
    assert (spec.interval, spec.timeout, spec.jitter) == (0.5, 0.4, 0.1)
    assert spec.policy().mode is ProbingMode.INACTIVE
    assert (spec.failure_threshold, spec.success_threshold) == (4, 1)
    assert spec.from_ == "sip:lb@example.com"
    assert spec.accepts(404)
    assert spec.accepts(202)
    assert not spec.accepts(403)


def test_passive_codes_and_the_retry_after_cap_are_flags_too() -> None:
    spec = probing("--passive-codes=5xx, 480", "--max-retry-after=60")
    assert spec.passive_codes == ["5xx", "480"]
    assert spec.max_retry_after == 60.0


def test_no_flags_give_the_defaults() -> None:
    assert probing() == ProbingSpec()
    # Replies prove a destination alive: none counts against it unless configured.
    assert ProbingSpec().passive_codes == []
    assert ProbingSpec().max_retry_after == 300.0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--probe-interval=1", "--probe-timeout=2"], "--probe-timeout: 2s is longer than"),
        (["--probe-codes=abc"], "--probe-codes: "),
        (["--failure-threshold=0"], "--failure-threshold: "),
        (["--probe-from=nope"], "--probe-from: "),
        (["--probe-mode=sometimes"], "--probe-mode: "),
        (["--probe-jitter=1.5"], "--probe-jitter: "),
        (["--passive-codes=603"], "--passive-codes: "),
        (["--max-retry-after=0"], "--max-retry-after: "),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--dispatcher-list", "/nonexistent", *flags]) == 2
    assert message in capsys.readouterr().err
