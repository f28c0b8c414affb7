"""The flags of the proxy's edge protections: limits before parsing, admission control and the
request policy (docs/dispatcher.md). Kept out of ``cli.py`` so that each group's flags, types
and help stay together, and ``cli.py`` stays about what runs."""

from __future__ import annotations

import argparse

from sipdispatch.proxy.settings import DEFAULTS

__all__ = ["add_admission_arguments", "add_limit_arguments", "add_policy_arguments"]


def add_admission_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "admission control", "per-source rates, live transactions, TCP connections (0: off)"
    )
    add = group.add_argument
    add(
        "--source-rate",
        type=int,
        default=DEFAULTS.source_rate,
        metavar="N",
        help="new requests per second from one source IP; more are refused (%(default)s)",
    )
    add(
        "--dialog-rate",
        type=int,
        default=DEFAULTS.dialog_rate,
        metavar="N",
        help="in-dialog requests per second from one source IP (%(default)s)",
    )
    add(
        "--source-ban",
        type=float,
        default=DEFAULTS.source_ban,
        metavar="SECONDS",
        help="refuse every request of a source over a rate for this long (%(default)s)",
    )
    add(
        "--rate-reply",
        choices=("drop", "503"),
        default="503" if DEFAULTS.rate_reply_udp else "drop",
        help="what a UDP request over its source's rate gets; over TCP always 503 (%(default)s)",
    )
    add(
        "--rate-sources",
        type=int,
        default=DEFAULTS.rate_sources,
        metavar="N",
        help="source addresses tracked per second; the rest share one count (%(default)s)",
    )
    add(
        "--max-transactions",
        type=int,
        default=DEFAULTS.max_transactions,
        metavar="N",
        help="live transactions; a new request beyond them gets 503 (%(default)s)",
    )
    add(
        "--retry-after",
        type=int,
        default=DEFAULTS.retry_after,
        metavar="SECONDS",
        help="Retry-After of admission control's 503s (%(default)s)",
    )
    add(
        "--tcp-max-connections",
        type=int,
        default=DEFAULTS.tcp_max_connections,
        metavar="N",
        help="inbound TCP connections (default: 2048, or half of RLIMIT_NOFILE if lower)",
    )
    add(
        "--tcp-max-per-source",
        type=int,
        default=DEFAULTS.tcp_max_per_source,
        metavar="N",
        help="inbound TCP connections from one address (%(default)s)",
    )
    add(
        "--tcp-idle-timeout",
        type=float,
        default=DEFAULTS.tcp_idle_timeout,
        metavar="SECONDS",
        help="close a TCP connection that carried nothing for this long (%(default)s)",
    )
    add(
        "--tcp-message-timeout",
        type=float,
        default=DEFAULTS.tcp_message_timeout,
        metavar="SECONDS",
        help="close a TCP connection whose message is still incomplete after this long "
        "(%(default)s)",
    )


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names, as the policy flags take them ("" is none)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _hops(text: str) -> int:
    """A Max-Forwards value: 1 to 255 (0 would make every forwarded request a 483)."""
    value = int(text)
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value} is not within 1-255")
    return value


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "request policy", "requests refused however well formed (docs/dispatcher.md)"
    )
    add = group.add_argument
    add(
        "--no-request-policy",
        dest="request_policy",
        action="store_false",
        help="turn every rule below off (to compare, or behind another filter)",
    )
    add(
        "--allow-methods",
        type=_names,
        default=DEFAULTS.allow_methods,
        metavar="M1,M2",
        help="methods dispatched, others get 405; '*' for any "
        f"(default: {','.join(DEFAULTS.allow_methods)})",
    )
    add(
        "--allow-domain",
        dest="allow_domains",
        action="append",
        default=list(DEFAULTS.allow_domains),
        metavar="HOST",
        help="a host new requests' Request-URI may name besides the proxy's own addresses "
        "(repeatable; '*' for any)",
    )
    add(
        "--deny-user-agents",
        type=_names,
        default=DEFAULTS.deny_user_agents,
        metavar="S1,S2",
        help="User-Agent substrings whose requests are dropped unanswered ('' for none; "
        f"default: {','.join(DEFAULTS.deny_user_agents)})",
    )
    add(
        "--max-forwards",
        type=_hops,
        default=DEFAULTS.max_forwards,
        metavar="N",
        help="highest Max-Forwards sent on; higher ones received are lowered (%(default)s)",
    )
    add(
        "--no-loop-detection",
        dest="loop_detection",
        action="store_false",
        help="do not answer 482 to a request that comes back unchanged",
    )
    add(
        "--allow-control-characters",
        dest="refuse_control_characters",
        action="store_false",
        help="do not answer 400 to control characters (bare CR, NUL...) in header fields",
    )


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "message limits", "checked on a message's bytes before it is parsed"
    )
    add = group.add_argument
    add(
        "--max-message-size",
        type=int,
        default=DEFAULTS.max_message_size,
        metavar="BYTES",
        help="one UDP datagram or TCP message; larger ones get 513 (%(default)s)",
    )
    add(
        "--max-headers",
        type=int,
        default=DEFAULTS.max_headers,
        metavar="N",
        help="header lines of one message; more get 400 (%(default)s)",
    )
    add(
        "--max-line-length",
        type=int,
        default=DEFAULTS.max_line_length,
        metavar="BYTES",
        help="one header line; longer ones get 400 (%(default)s)",
    )
    add(
        "--max-via",
        type=int,
        default=DEFAULTS.max_via,
        metavar="N",
        help="elements of the Via list; more get 400 (%(default)s)",
    )
    add(
        "--max-route",
        type=int,
        default=DEFAULTS.max_route,
        metavar="N",
        help="elements of the Route list, and of the Record-Route list; more get 400 (%(default)s)",
    )
