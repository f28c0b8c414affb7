"""``sipdispatch-proxy``: the data plane, standalone from a file or, in Kubernetes mode, from
the table the operator renders (``--kubernetes-table``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.proxy import kubetable, reporting
from sipdispatch.proxy.server import ProxyServer, run
from sipdispatch.proxy.settings import DEFAULTS, ProxySettings
from sipdispatch.proxy.tables import FileTableSource, TableError, TableSource

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipdispatch-proxy",
        description="SIP load balancer: dispatches calls over destination sets.",
    )
    table = parser.add_mutually_exclusive_group(required=True)
    table.add_argument("--config", type=Path, help="YAML configuration (listeners, sets, probing)")
    table.add_argument(
        "--dispatcher-list",
        type=Path,
        metavar="FILE",
        help="destination table in Kamailio's dispatcher.list format",
    )
    kubetable.add_arguments(parser, table)
    reporting.add_arguments(parser)
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="PROTO:IP:PORT",
        help="listener, e.g. udp:0.0.0.0:5060 or tcp:0.0.0.0:5060 (repeatable)",
    )
    parser.add_argument(
        "--advertise",
        metavar="HOST[:PORT]",
        help="address written in Record-Route: the one callers reach (a Service address)",
    )
    parser.add_argument(
        "--algorithm",
        default="round-robin",
        help="algorithm (name or Kamailio number) for sets that do not name one",
    )
    parser.add_argument("--set", dest="default_set", type=int, help="set that new calls use")
    parser.add_argument(
        "--secret-file",
        type=Path,
        help="file with the secret that signs Record-Routes, shared by all replicas "
        "(or set SIPDISPATCH_SECRET)",
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=DEFAULTS.answer_timeout,
        metavar="SECONDS",
        help="fail over when a destination sends no response at all within this time",
    )
    parser.add_argument(
        "--timer-t1",
        type=float,
        default=DEFAULTS.timer_t1,
        metavar="SECONDS",
        help="RFC 3261 T1; retransmission and transaction timers scale with it",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULTS.drain_timeout,
        metavar="SECONDS",
        help="on SIGTERM, stop being ready and let calls being set up finish for this long",
    )
    parser.add_argument(
        "--control",
        default=DEFAULTS.control,
        metavar="IP:PORT",
        help="HTTP control API and /metrics address ('off' to disable)",
    )
    parser.add_argument(
        "--control-token-file",
        type=Path,
        help="bearer token that write calls of the control API must carry "
        "(or set SIPDISPATCH_CONTROL_TOKEN)",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    _add_probing_arguments(parser)
    _add_limit_arguments(parser)
    _add_policy_arguments(parser)
    return parser


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names, as the policy flags take them ("" is none)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _hops(text: str) -> int:
    """A Max-Forwards value: 1 to 255 (0 would make every forwarded request a 483)."""
    value = int(text)
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value} is not within 1-255")
    return value


def _add_policy_arguments(parser: argparse.ArgumentParser) -> None:
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


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
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


# Probing flags -> ProbingSpec fields. They apply to a --dispatcher-list table; a --config
# file's own probing section takes precedence.
_PROBING_FLAGS = {
    "probe_interval": "interval",
    "probe_timeout": "timeout",
    "probe_jitter": "jitter",
    "probe_mode": "mode",
    "failure_threshold": "failure_threshold",
    "success_threshold": "success_threshold",
    "probe_from": "from_",
    "probe_codes": "reply_codes",
}


def _add_probing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "probing", "OPTIONS health checks (a --config file's probing section takes precedence)"
    )
    add = group.add_argument
    # No argparse defaults here: a flag not given leaves the ProbingSpec's own default.
    spec = DEFAULTS.probing
    add(
        "--probe-interval",
        type=float,
        metavar="SECONDS",
        help=f"between probes ({spec.interval:g})",
    )
    add(
        "--probe-timeout",
        type=float,
        metavar="SECONDS",
        help=f"wait for a reply ({spec.timeout:g})",
    )
    add(
        "--probe-jitter",
        type=float,
        metavar="FRACTION",
        help=f"+/- of the interval ({spec.jitter:g})",
    )
    add(
        "--probe-mode", help=f"all, failed, inactive, flagged, off, or Kamailio's 0-3 ({spec.mode})"
    )
    add(
        "--failure-threshold",
        type=int,
        metavar="N",
        help=f"failures to go inactive ({spec.failure_threshold})",
    )
    add(
        "--success-threshold",
        type=int,
        metavar="N",
        help=f"successes to come back ({spec.success_threshold})",
    )
    add("--probe-from", metavar="URI", help=f"From of probes ({spec.from_})")
    add(
        "--probe-codes",
        metavar="CODES",
        help="accepted replies, comma separated codes or classes, e.g. 2xx,404 "
        f"({','.join(spec.reply_codes)})",
    )
    add(
        "--max-dialog-age",
        type=float,
        default=DEFAULTS.max_dialog_age,
        metavar="SECONDS",
        help="stop counting a call whose BYE was not seen after this long (call-load)",
    )


def _probing(args: argparse.Namespace) -> ProbingSpec:
    """The probing flags given, validated like a config file's probing section."""
    given = {
        name: getattr(args, flag)
        for flag, name in _PROBING_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if given and getattr(args, "config", None) is not None:
        logging.getLogger(__name__).warning(
            "probing flags are ignored: the --config file's probing section applies"
        )
    if "reply_codes" in given:
        given["reply_codes"] = [c.strip() for c in given["reply_codes"].split(",") if c.strip()]
    try:
        return ProbingSpec.model_validate(given)
    except ValidationError as exc:
        flags = {name: flag for flag, name in _PROBING_FLAGS.items()}
        flags["from"] = "probe_from"  # errors name the field by its alias
        problems = []
        for error in exc.errors():
            # A check over several fields names its field in ``ctx["subpath"]``.
            loc = error["loc"] or tuple(error.get("ctx", {}).get("subpath", ()))
            flag = flags.get(str(loc[0]), "") if loc else ""
            name = f"--{flag.replace('_', '-')}: " if flag else ""
            message = error.get("ctx", {}).get("message") or error["msg"]
            problems.append(f"{name}{message}")
        raise ValueError("; ".join(problems)) from None


def _secret(args: argparse.Namespace) -> bytes | None:
    if args.secret_file is not None:
        path: Path = args.secret_file
        return path.read_bytes().strip()
    from_env = os.environ.get("SIPDISPATCH_SECRET")
    return from_env.encode() if from_env else None


def _token(args: argparse.Namespace) -> str:
    if args.control_token_file is not None:
        path: Path = args.control_token_file
        return path.read_text().strip()
    return os.environ.get("SIPDISPATCH_CONTROL_TOKEN", "")


def _source(args: argparse.Namespace) -> tuple[TableSource, Sequence[reporting.Companion]]:
    """The table source the command line names, and what runs beside it."""
    if args.kubernetes_table:
        source = kubetable.table_source(args)
        return source, reporting.companions(args, source)
    path = args.config or args.dispatcher_list
    return FileTableSource(
        path,
        kamailio_format=args.dispatcher_list is not None,
        algorithm=args.algorithm,
        default_set=args.default_set,
    ), ()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        probing = _probing(args)
        source, companions = _source(args)  # KubeConfigError is a ValueError
    except ValueError as exc:
        print(f"sipdispatch-proxy: {exc}", file=sys.stderr)
        return 2
    settings = ProxySettings(
        listen=tuple(args.listen),
        advertise=args.advertise,
        secret=_secret(args),
        answer_timeout=args.answer_timeout,
        timer_t1=args.timer_t1,
        control=None if args.control == "off" else args.control,
        control_token=_token(args),
        drain_timeout=args.drain_timeout,
        probing=probing,
        max_dialog_age=args.max_dialog_age,
        max_message_size=args.max_message_size,
        max_headers=args.max_headers,
        max_line_length=args.max_line_length,
        max_via=args.max_via,
        max_route=args.max_route,
        request_policy=args.request_policy,
        allow_methods=args.allow_methods,
        allow_domains=tuple(args.allow_domains),
        deny_user_agents=args.deny_user_agents,
        max_forwards=args.max_forwards,
        loop_detection=args.loop_detection,
        refuse_control_characters=args.refuse_control_characters,
    )
    try:
        _run(ProxyServer(source, settings, companions))
    except TableError as exc:
        print(f"sipdispatch-proxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sipdispatch-proxy: cannot listen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _tune_gc() -> None:
    """Fewer, cheaper collections: a proxy allocates per message and keeps little.

    Everything imported so far lives for the whole run: freezing it keeps the cycle collector
    from walking it again. A larger young generation runs the collector ten times less often;
    the hot path keeps no reference cycles, so young collections find little to do anyway.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(7000, middle, old)


def _run(server: ProxyServer) -> None:
    _tune_gc()
    try:
        import uvloop  # noqa: PLC0415 - optional: the standard loop works, only slower
    except ImportError:
        asyncio.run(run(server))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(server))
