"""The flags of DNS destinations (docs/dispatcher.md#dns-destinations): which servers to ask
and how often names are asked again. Kept beside ``edgeflags.py`` so that ``cli.py`` only
wires them."""

from __future__ import annotations

import argparse
from typing import Any

from sipdispatch.proxy.resolver import parse_server
from sipdispatch.proxy.settings import DEFAULTS

__all__ = ["add_dns_arguments", "dns_settings"]


def _server(text: str) -> str:
    try:
        parse_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def add_dns_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "DNS destinations", "destinations named by host name or SRV (RFC 3263)"
    )
    add = group.add_argument
    add(
        "--dns-server",
        dest="dns_servers",
        action="append",
        type=_server,
        default=[],
        metavar="IP[:PORT]",
        help="DNS server to ask, repeatable (default: the system's /etc/resolv.conf)",
    )
    add(
        "--dns-timeout",
        type=_seconds,
        default=DEFAULTS.dns_timeout,
        metavar="SECONDS",
        help="how long one resolution may take (%(default)s)",
    )
    add(
        "--dns-refresh-floor",
        type=_seconds,
        default=DEFAULTS.dns_refresh_floor,
        metavar="SECONDS",
        help="ask a name again no sooner than this, whatever its TTL (%(default)s)",
    )
    add(
        "--dns-refresh-ceiling",
        type=_seconds,
        default=DEFAULTS.dns_refresh_ceiling,
        metavar="SECONDS",
        help="ask a name again no later than this (%(default)s)",
    )
    add(
        "--dns-max-stale",
        type=_seconds,
        default=DEFAULTS.dns_max_stale,
        metavar="SECONDS",
        help="through DNS timeouts and SERVFAIL, keep the last good addresses this long past "
        "their TTL (%(default)s)",
    )

    add(
        "--dns-drain-grace",
        type=_seconds,
        default=DEFAULTS.dns_drain_grace,
        metavar="SECONDS",
        help="an address that left its name's answer drains (DR: in-dialog requests pass, "
        "no new calls) this long before it leaves the table (%(default)s)",
    )


def dns_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `ProxySettings` fields the DNS flags set."""
    return {
        "dns_servers": tuple(args.dns_servers),
        "dns_timeout": args.dns_timeout,
        "dns_refresh_floor": args.dns_refresh_floor,
        "dns_refresh_ceiling": args.dns_refresh_ceiling,
        "dns_max_stale": args.dns_max_stale,
        "dns_drain_grace": args.dns_drain_grace,
    }
