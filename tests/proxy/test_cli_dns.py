"""The DNS flags: servers as IP[:PORT], bounds in seconds, bad values refused naming the flag."""

from __future__ import annotations

import pytest

from sipdispatch.proxy import cli, dnsflags
from sipdispatch.proxy.resolver import parse_server
from sipdispatch.proxy.settings import DEFAULTS, ProxySettings, dns_policy


def settings(*flags: str) -> ProxySettings:
    args = cli.build_parser().parse_args(["--dispatcher-list", "x", *flags])
    return ProxySettings(**dnsflags.dns_settings(args))


def test_defaults_ask_resolv_conf_with_the_documented_bounds() -> None:
    chosen = settings()
    assert chosen.dns_servers == ()
    policy = dns_policy(chosen)
    assert (policy.floor, policy.ceiling, policy.max_stale, policy.drain_grace) == (
        5.0,
        3600.0,
        300.0,
        30.0,
    )
    assert chosen == DEFAULTS  # the flags' defaults are the settings' own


def test_servers_and_bounds_from_the_flags() -> None:
    chosen = settings(
        "--dns-server",
        "127.0.0.1:5353",
        "--dns-server",
        "[::1]:53",
        "--dns-refresh-floor",
        "0.5",
        "--dns-drain-grace",
        "3",
    )
    assert [parse_server(s) for s in chosen.dns_servers] == [("127.0.0.1", 5353), ("::1", 53)]
    assert dns_policy(chosen).floor == 0.5
    assert dns_policy(chosen).drain_grace == 3.0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dns-server", "dns.example.com"], "argument --dns-server: 'dns.example.com': "),
        (
            ["--dns-server", "127.0.0.1:0"],
            "argument --dns-server: '127.0.0.1:0' has an invalid port",
        ),
        (["--dns-refresh-floor", "0"], "argument --dns-refresh-floor: '0' must be more than 0"),
        (["--dns-timeout", "soon"], "argument --dns-timeout: 'soon' is not a number of seconds"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        settings(*flags)
    assert message in capsys.readouterr().err
