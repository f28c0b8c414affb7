"""``sipdispatch-operator`` (and ``python -m sipdispatch.operator``): run the kopf operator."""

from __future__ import annotations

import argparse
import os
import re
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
from sipdispatch.operator.keysecret import KeySecret, SecretKeeper
from sipdispatch.operator.routekeys import Policy
from sipdispatch.operator.watchdog import WatchDog

__all__ = ["build_parser", "login", "main"]

#: server-side timeout of every watch request, in seconds; a stalled watch fails /healthz
#: after this plus 10 s of silence
WATCH_TIMEOUT = 60.0

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
_UNITS = (3600.0, 60.0, 1.0)

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
        help="namespace of the Lease and of --route-keys-secret (default: POD_NAMESPACE, else "
        "the credentials')",
    )
    parser.add_argument(
        "--metrics",
        metavar="URL",
        help="serve Prometheus metrics, e.g. http://0.0.0.0:8081/metrics",
    )
    keys = parser.add_argument_group(
        "route keys", "the proxies' Secret, made and rotated by the operator (docs/dispatcher.md)"
    )
    keys.add_argument(
        "--route-keys-secret",
        metavar="NAME",
        help="make this Secret (in the Lease's namespace) when missing and rotate its route "
        "keys (default: none, the Secret is someone else's)",
    )
    keys.add_argument(
        "--route-keys-key",
        default="record-route-secret",
        metavar="KEY",
        help="the Secret's key holding the route key list (default: record-route-secret)",
    )
    keys.add_argument(
        "--control-token-key",
        default="",
        metavar="KEY",
        help="the Secret's key holding the control API token, made when missing (default: none)",
    )
    keys.add_argument(
        "--rotate-route-keys-every",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="a new route key this long after the last one began to sign, e.g. 720h "
        "(default: 0, only when asked by annotation)",
    )
    keys.add_argument(
        "--route-keys-settle",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="a new key signs this long after it was added, once every proxy has it (default: 5m)",
    )
    keys.add_argument(
        "--dialog-lifetime",
        type=_duration,
        default=43200.0,
        metavar="DURATION",
        help="the proxies' --dialog-lifetime: a retired key is removed this long after it "
        "stopped signing (default: 12h)",
    )
    keys.add_argument(
        "--max-route-keys",
        type=_at_least_two,
        default=4,
        metavar="N",
        help="keep at most N route keys, dropping the oldest retired ones (default: 4)",
    )
    parser.add_argument("--log-format", choices=sorted(_LOG_FORMATS), default="full")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return parser


def _duration(text: str) -> float:
    """Seconds from "720h", "1h30m", "90s" or "90" (seconds), as the chart's values say them."""
    text = text.strip()
    try:
        return _non_negative(float(text))
    except ValueError:
        pass
    found = _DURATION.fullmatch(text)
    if not text or found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 720h, 30m, 90s)")
    parts = found.groups()
    return sum(float(part) * unit for part, unit in zip(parts, _UNITS, strict=True) if part)


def _non_negative(seconds: float) -> float:
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{seconds:g}: a duration is 0 or more")
    return seconds


def _at_least_two(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if number < 2:
        raise argparse.ArgumentTypeError(f"{number}: at least 2 (the signing key and a new one)")
    return number


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
    elector = watchdog = keeper = None
    home = args.lease_namespace or os.environ.get("POD_NAMESPACE") or kube.namespace
    if args.lease:
        side = Kube(locate(args.kubeconfig))  # the Lease's own connection
        namespace = home
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"
        elector = Elector(side, namespace, args.lease, identity)
        watchdog = WatchDog(side, namespace, args.lease, watch_timeout=args.watch_timeout)
    controller = Controller(Api(kube), status_interval=args.status_interval)
    if args.route_keys_secret:
        keeper = SecretKeeper(
            Kube(locate(args.kubeconfig)),  # the Secret's own connection
            KeySecret(home, args.route_keys_secret, args.route_keys_key, args.control_token_key),
            Policy(
                rotate_every=args.rotate_route_keys_every,
                settle=args.route_keys_settle,
                dialog_lifetime=args.dialog_lifetime,
                max_keys=args.max_route_keys,
            ),
            leading=lambda: controller.leading,
        )
    memo = handlers.Options(
        controller=controller,
        watch_timeout=args.watch_timeout,
        kubeconfig=args.kubeconfig,
        namespaced=bool(args.namespace),
        elector=elector,
        watchdog=watchdog,
        keeper=keeper,
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
