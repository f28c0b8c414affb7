"""``sipdispatch-proxy``: the data plane, standalone from a file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sipdispatch.proxy.server import ProxyOptions, run
from sipdispatch.proxy.tables import FileTableSource, TableError

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
        default=5.0,
        metavar="SECONDS",
        help="fail over when a destination sends no response at all within this time",
    )
    parser.add_argument(
        "--timer-t1",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="RFC 3261 T1; retransmission and transaction timers scale with it",
    )
    parser.add_argument(
        "--control",
        default="127.0.0.1:8080",
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
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    path = args.config or args.dispatcher_list
    options = ProxyOptions(
        source=FileTableSource(
            path,
            kamailio_format=args.dispatcher_list is not None,
            algorithm=args.algorithm,
            default_set=args.default_set,
        ),
        listen=args.listen,
        advertise=args.advertise,
        secret=_secret(args),
        answer_timeout=args.answer_timeout,
        timer_t1=args.timer_t1,
        control=None if args.control == "off" else args.control,
        control_token=_token(args),
    )
    try:
        _run(options)
    except TableError as exc:
        print(f"sipdispatch-proxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sipdispatch-proxy: cannot listen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _run(options: ProxyOptions) -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional: the standard loop works, only slower
    except ImportError:
        asyncio.run(run(options))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(options))
