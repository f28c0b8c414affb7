"""The compiled build's C code over header sections reads every one as the Python code does."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_the_c_header_loop_agrees_with_the_python_one(compiled_proxy_command: list[str]) -> None:
    python = Path(compiled_proxy_command[0]).parent / "python"
    checked = subprocess.run(
        [str(python), str(HERE / "lines_agreement.py"), "20000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert "agree" in checked.stdout
    # the generated cases reach both outcomes, not only the sections the C loop declines
    assert " same fields" in checked.stdout
    assert " same error" in checked.stdout
    assert " same counts" in checked.stdout
    assert " same parameters" in checked.stdout
    assert " same refusal" in checked.stdout
    assert " same compared form" in checked.stdout
    assert " form left to Python" in checked.stdout
    assert " same head end" in checked.stdout
    assert " same bytes" in checked.stdout
    assert " bytes left to Python" in checked.stdout
