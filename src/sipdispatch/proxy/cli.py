"""``sipdispatch-proxy``: the data plane, standalone from a file or, in Kubernetes mode, from
the table the operator renders (``--kubernetes-table``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.proxy import dnsflags, edgeflags, kubemode, routekeys, workerlink, workers
from sipdispatch.proxy.server import ProxyServer, run
from sipdispatch.proxy.settings import DEFAULTS, ProxySettings
from sipdispatch.proxy.tables import FileTableSource, TableError, TableSource
from sipdispatch.sip.grammar import HEADER_NAME

if TYPE_CHECKING:
    from sipdispatch.proxy.reporting import Companion

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
    kubemode.add_arguments(parser, table)
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="PROTO:IP:PORT",
        help="listener, e.g. udp:0.0.0.0:5060, tcp:[::1]:5060, tls:0.0.0.0:5061 or, with the"
        " address it writes in Record-Route, 'udp:10.0.0.1:5060 advertise 203.0.113.1:5060'"
        " (repeatable; several per transport and address family; a destination's socket="
        " names one)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="certificate (PEM, chain first) of the tls listeners; read again when it changes",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="private key (PEM) of --tls-cert"
    )
    parser.add_argument(
        "--advertise",
        metavar="HOST[:PORT]",
        help="address written in Record-Route by listeners that advertise none of their own: the"
        " one callers reach (a Service address); default: each listener's own address",
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
        help="the keys that sign Record-Routes, shared by all replicas: one per line, at least "
        f"{routekeys.MIN_KEY_LENGTH} characters, the first signs, any is accepted; read again "
        "when it changes (or set SIPDISPATCH_SECRET, read once)",
    )
    parser.add_argument(
        "--dialog-lifetime",
        type=float,
        default=DEFAULTS.dialog_lifetime,
        metavar="SECONDS",
        help="how long a call's signed Record-Route is honoured: longer than any call lasts",
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
    parser.add_argument(
        "--challenge-affinity-ttl",
        type=float,
        default=DEFAULTS.challenge_affinity_ttl,
        metavar="SECONDS",
        help="after a 401/407, the Call-ID's retry goes to the same destination for this long",
    )
    parser.add_argument(
        "--challenge-affinity-size",
        type=int,
        default=DEFAULTS.challenge_affinity_size,
        metavar="CALLS",
        help="challenged Call-IDs remembered at most (the oldest go first; 0 turns it off)",
    )
    parser.add_argument(
        "--source-header",
        type=_header_name,
        default=DEFAULTS.source_header,
        metavar="NAME",
        help="add this header (e.g. X-Sipdispatch-Source) to forwarded requests, naming where "
        "each came from as transport:ip:port; a copy that arrives is removed (default: off)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="worker processes sharing the listening ports (SO_REUSEPORT); 'auto': one per core"
        " this process may use (default 1: one process, as before)",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    _add_probing_arguments(parser)
    edgeflags.add_limit_arguments(parser)
    edgeflags.add_admission_arguments(parser)
    edgeflags.add_policy_arguments(parser)
    dnsflags.add_dns_arguments(parser)
    return parser


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
    "passive_codes": "passive_codes",
    "max_retry_after": "max_retry_after",
}
# Flags that take a comma-separated list of codes.
_CODE_LISTS = ("reply_codes", "passive_codes")


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
        "--passive-codes",
        metavar="CODES",
        help="replies to calls that count against their destination like a failed probe, "
        "comma separated 4xx/5xx codes or classes; timeouts and transport errors always count, "
        "487 never (none)",
    )
    add(
        "--max-retry-after",
        type=float,
        metavar="SECONDS",
        help=f"longest drain a probe's 503 Retry-After may ask for ({spec.max_retry_after:g})",
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
    for name in _CODE_LISTS:
        if name in given:
            given[name] = [c.strip() for c in given[name].split(",") if c.strip()]
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


def _workers(value: str) -> int:
    if value == "auto":
        return workers.available_cores()
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers (1 or more)")
    return int(value)


def _header_name(value: str) -> str:
    if not HEADER_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a header name")
    return value


def _secret_keys(args: argparse.Namespace) -> tuple[bytes, ...]:
    """The route keys the command line names (none: a random key of this process only);
    raises ``routekeys.KeyListError`` naming the flag or variable."""
    if args.secret_file is not None:
        return routekeys.read_key_file(args.secret_file, "--secret-file")
    from_env = os.environ.get("SIPDISPATCH_SECRET")
    if from_env is None:
        return ()
    return routekeys.parse_keys(from_env, "SIPDISPATCH_SECRET")


def _token(args: argparse.Namespace) -> str:
    if args.control_token_file is not None:
        path: Path = args.control_token_file
        return path.read_text().strip()
    return os.environ.get("SIPDISPATCH_CONTROL_TOKEN", "")


def _source(args: argparse.Namespace) -> tuple[TableSource, Sequence[Companion]]:
    """The table source the command line names, and what runs beside it."""
    if args.kubernetes_table:
        return kubemode.kubernetes_mode(args)
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
        secret_keys = _secret_keys(args)  # KeyListError is a ValueError
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if args.dialog_lifetime <= 0:
            raise ValueError("--dialog-lifetime: must be more than 0 seconds")
        source, companions = _source(args)  # KubeConfigError is a ValueError
    except ValueError as exc:
        print(f"sipdispatch-proxy: {exc}", file=sys.stderr)
        return 2
    settings = ProxySettings(
        listen=tuple(args.listen),
        advertise=args.advertise,
        secret_keys=secret_keys,
        secret_file=args.secret_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        answer_timeout=args.answer_timeout,
        timer_t1=args.timer_t1,
        control=None if args.control == "off" else args.control,
        control_token=_token(args),
        drain_timeout=args.drain_timeout,
        probing=probing,
        max_dialog_age=args.max_dialog_age,
        dialog_lifetime=args.dialog_lifetime,
        max_message_size=args.max_message_size,
        max_headers=args.max_headers,
        max_line_length=args.max_line_length,
        max_via=args.max_via,
        max_route=args.max_route,
        challenge_affinity_ttl=args.challenge_affinity_ttl,
        challenge_affinity_size=args.challenge_affinity_size,
        source_header=args.source_header,
        source_rate=args.source_rate,
        dialog_rate=args.dialog_rate,
        source_ban=args.source_ban,
        rate_reply_udp=args.rate_reply == "503",
        rate_sources=args.rate_sources,
        max_transactions=args.max_transactions,
        retry_after=args.retry_after,
        tcp_max_connections=args.tcp_max_connections,
        tcp_max_per_source=args.tcp_max_per_source,
        tcp_idle_timeout=args.tcp_idle_timeout,
        tcp_message_timeout=args.tcp_message_timeout,
        request_policy=args.request_policy,
        allow_methods=args.allow_methods,
        allow_domains=tuple(args.allow_domains),
        deny_user_agents=args.deny_user_agents,
        max_forwards=args.max_forwards,
        loop_detection=args.loop_detection,
        refuse_control_characters=args.refuse_control_characters,
        **dnsflags.dns_settings(args),
    )
    if args.workers > 1:
        return _supervise(args, settings)
    return _serve(ProxyServer(source, settings, companions))


def _supervise(args: argparse.Namespace, settings: ProxySettings) -> int:
    """Fork the workers; each makes its own table source (a watch, a Kubernetes client).
    They share one route key when none is given, so that each routes the others' dialogs."""
    if not settings.secret_keys:
        settings = replace(settings, secret_keys=(secrets.token_urlsafe(32).encode(),))
    directory = tempfile.mkdtemp(prefix="sipdispatch-workers-")
    link = workerlink.link_address(directory)

    def serve(index: int) -> int:
        worker = replace(
            settings,
            workers=args.workers,
            worker_index=index,
            worker_link=link,
            control=settings.control if index == 0 else None,
        )
        source, companions = _source(args)
        return _serve(ProxyServer(source, worker, companions if index == 0 else ()))

    try:
        return workers.supervise(args.workers, serve)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _serve(server: ProxyServer) -> int:
    try:
        _run(server)
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
