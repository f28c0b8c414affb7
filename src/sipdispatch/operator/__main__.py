"""``sipdispatch-operator`` (and ``python -m sipdispatch.operator``): run the kopf operator."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf

from sipdispatch.kube import Elector, Kube, KubeConfigError, locate
from sipdispatch.kube.credentials import EXPIRY_MARGIN
from sipdispatch.operator import handlers
from sipdispatch.operator.controller import Controller
from sipdispatch.operator.k8s import Api
from sipdispatch.operator.watchdog import WatchDog

__all__ = ["build_parser", "login", "main"]

#: server-side timeout of every watch request, in seconds; a stalled watch fails /healthz
#: after this plus 10 s of silence
WATCH_TIMEOUT = 60.0

_LOG_FORMATS = {
    "plain": kopf.LogFormat.PLAIN,
    "full": kopf.LogFormat.FULL,
    "json": kopf.LogFormat.JSON,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipdispatch-operator",
        description="Renders DispatcherSets and their Services' endpoints into sipdispatch "
        "proxy tables, and the proxies' reports into DispatcherSet status.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="watch this namespace (repeatable; globs as in kopf); default: all namespaces",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no peering with other operator instances (run exactly one)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--kubeconfig", type=Path, help="credentials (default: KUBECONFIG, else in-cluster)"
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="at most one status write per DispatcherSet this often (default: 1)",
    )
    parser.add_argument(
        "--watch-timeout",
        type=float,
        default=WATCH_TIMEOUT,
        metavar="SECONDS",
        help="server-side timeout of every watch request; with --lease, /healthz fails after "
        f"this plus 10 s without a word from the API server (default: {WATCH_TIMEOUT:g})",
    )
    parser.add_argument(
        "--lease",
        metavar="NAME",
        help="leader election on this coordination.k8s.io Lease: only its holder writes "
        "tables and status; the others stand by (default: no election, always write)",
    )
    parser.add_argument(
        "--lease-namespace",
        metavar="NAMESPACE",
        help="namespace of the Lease (default: POD_NAMESPACE, else the credentials')",
    )
    parser.add_argument(
        "--metrics",
        metavar="URL",
        help="serve Prometheus metrics, e.g. http://0.0.0.0:8081/metrics",
    )
    parser.add_argument("--log-format", choices=sorted(_LOG_FORMATS), default="full")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return parser


@kopf.on.login()
async def login(memo: handlers.Options, **_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials: the operator's own, loaded again at every login (kopf logs in
    again on a 401 and when a token expires, so an exec plugin's short-lived token and a
    rotated ServiceAccount token both work)."""
    found = await locate(memo.kubeconfig).credentials()
    return kopf.ConnectionInfo(
        server=found.server,
        ca_path=found.ca_file,
        insecure=found.insecure,
        scheme="Bearer" if found.token else None,
        token=found.token,
        certificate_path=found.cert_file,
        private_key_path=found.key_file,
        default_namespace=found.namespace,
        expiration=found.expires - EXPIRY_MARGIN if found.expires else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=_LOG_FORMATS[args.log_format])
    try:
        kube = Kube(locate(args.kubeconfig))
    except KubeConfigError as exc:
        print(f"sipdispatch-operator: {exc}", file=sys.stderr)
        return 2
    elector = watchdog = None
    if args.lease:
        side = Kube(locate(args.kubeconfig))  # the Lease's own connection
        namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE") or side.namespace
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"
        elector = Elector(side, namespace, args.lease, identity)
        watchdog = WatchDog(side, namespace, args.lease, watch_timeout=args.watch_timeout)
    memo = handlers.Options(
        controller=Controller(Api(kube), status_interval=args.status_interval),
        watch_timeout=args.watch_timeout,
        kubeconfig=args.kubeconfig,
        namespaced=bool(args.namespace),
        elector=elector,
        watchdog=watchdog,
        metrics_url=args.metrics,
        tasks=[],
        runners=[],
    )
    kopf.run(
        standalone=args.standalone,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
