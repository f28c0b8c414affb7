"""The compiled build's C code over header sections reads every one as the Python code does."""

from __future__ import annotations

from pathlib import Path

from sipdispatchproc import run_compiled

HERE = Path(__file__).resolve().parent


def test_the_c_header_loop_agrees_with_the_python_one(compiled_proxy_command: list[str]) -> None:
    out = run_compiled(compiled_proxy_command, HERE / "lines_agreement.py", "20000")
    assert "agree" in out
    # the generated cases reach both outcomes, not only the sections the C loop declines
    assert " same fields" in out
    assert " same error" in out
    assert " same counts" in out
    assert " same parameters" in out
    assert " same refusal" in out
    assert " same compared form" in out
    assert " form left to Python" in out
    assert " same head end" in out
    assert " same bytes" in out
    assert " bytes left to Python" in out
