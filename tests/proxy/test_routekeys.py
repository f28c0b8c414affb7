"""The route key list: how it is written, what is refused at start, and reloads of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipdispatch.proxy import cli, routekeys
from sipdispatch.proxy.core import Signer

OLD, NEW = "o" * 32, "n" * 64


def test_one_key_per_line_the_first_signs_comments_and_blanks_skipped() -> None:
    text = f"# rotated 2026-12-05\n{NEW}\n\n  {OLD}  \n{NEW}\n"
    assert routekeys.parse_keys(text, "--secret-file") == (NEW.encode(), OLD.encode())


def test_a_short_key_is_refused_naming_where_it_came_from_and_its_line() -> None:
    with pytest.raises(routekeys.KeyListError) as error:
        routekeys.parse_keys(f"{NEW}\nshort\n", "SIPDISPATCH_SECRET")
    assert str(error.value).startswith("SIPDISPATCH_SECRET: the key on line 2 has 5 characters")
    assert f"at least {routekeys.MIN_KEY_LENGTH}" in str(error.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "--secret-file: no key in it"),
        ("# only a comment\n\n", "--secret-file: no key in it"),
        ("x" * 31, "--secret-file: the key on line 1 has 31 characters"),
    ],
)
def test_the_proxy_refuses_to_start_on_an_unusable_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.1:5090\n")
    keys = tmp_path / "keys"
    keys.write_text(content)
    status = cli.main(["--dispatcher-list", str(table), "--secret-file", str(keys)])
    assert status == 2
    message = capsys.readouterr().err
    assert message.startswith("sipdispatch-proxy: ")
    assert message.replace(f" {keys}", "").removeprefix("sipdispatch-proxy: ").startswith(expected)


def test_a_missing_secret_file_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.1:5090\n")
    status = cli.main(["--dispatcher-list", str(table), "--secret-file", str(tmp_path / "none")])
    assert status == 2
    assert "--secret-file: cannot read" in capsys.readouterr().err


def test_a_changed_file_is_applied_and_a_broken_one_keeps_the_keys_in_use(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{OLD}\n")
    signer = Signer(OLD.encode())
    told: list[list[str]] = []
    watch = routekeys.KeyFileWatch(
        path,
        signer,
        routekeys.read_key_file(path, "--secret-file"),
        on_change=lambda fingerprints: told.append(list(fingerprints)),
    )
    old_signature = signer.sign("call")
    assert not watch.check()  # unchanged

    path.write_text(f"{OLD}\n{NEW}\n")  # step 1: the new key is accepted, the old one signs
    assert watch.check()
    assert signer.sign("call") == old_signature

    path.write_text(f"{NEW}\n{OLD}\n")  # step 2: the new key signs
    assert watch.check()
    assert signer.sign("call") != old_signature
    assert signer.verify(old_signature, "call")

    path.write_text("")  # emptied by mistake: the keys in use stay
    assert not watch.check()
    assert signer.verify(old_signature, "call")

    path.write_text(f"{NEW}\n")  # step 3: the old key goes
    assert watch.check()
    assert not signer.verify(old_signature, "call")
    old, new = routekeys.fingerprint(OLD.encode()), routekeys.fingerprint(NEW.encode())
    assert told == [[old, new], [new, old], [new]]  # what /metrics shows after each step


def test_logs_name_keys_by_fingerprint_only() -> None:
    text = routekeys.describe((NEW.encode(), OLD.encode()))
    assert NEW not in text
    assert OLD not in text
    assert text == (
        f"signing with key {routekeys.fingerprint(NEW.encode())}, "
        f"also accepting {routekeys.fingerprint(OLD.encode())}"
    )
