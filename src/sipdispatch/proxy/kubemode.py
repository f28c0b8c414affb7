"""Kubernetes mode's command line: its flags, and the table source and reporter they ask for.

The Kubernetes client is imported only when ``--kubernetes-table`` is given: a standalone
proxy never loads it (kubernetes_asyncio costs about 140 ms and 30 MiB at start).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipdispatch.proxy.kubetable import KubeTableSource
    from sipdispatch.proxy.reporting import Companion

__all__ = ["add_arguments", "kubernetes_mode"]


def add_arguments(parser: argparse.ArgumentParser, table: argparse._MutuallyExclusiveGroup) -> None:
    """``--kubernetes-table`` (in the table-source group), ``--kubeconfig`` and the
    reporting flags."""
    table.add_argument(
        "--kubernetes-table",
        metavar="[NAMESPACE/]NAME",
        help="Kubernetes mode: follow the table the operator renders into this ConfigMap "
        "(e.g. sipdispatch-table; namespace: POD_NAMESPACE or the credentials' own)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="credentials for Kubernetes mode (default: KUBECONFIG, else the pod's "
        "ServiceAccount, else ~/.kube/config)",
    )
    group = parser.add_argument_group("Kubernetes mode: reporting destination states")
    group.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write this replica's DispatcherReport for the operator's status (default: on)",
    )
    group.add_argument(
        "--report-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="at most one report this often; changes in between are coalesced (default: 1)",
    )
    group.add_argument(
        "--report-heartbeat",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="report at least this often, changed or not (default: 30)",
    )
    group.add_argument(
        "--replica",
        default=None,
        metavar="NAME",
        help="name of this replica in reports (default: POD_NAME, else the host name)",
    )


def kubernetes_mode(args: argparse.Namespace) -> tuple[KubeTableSource, Sequence[Companion]]:
    """The table source ``--kubernetes-table`` names and what runs beside it;
    ``KubeConfigError`` without credentials, ``ValueError`` for bad reporting flags."""
    # Kubernetes mode only: see the module's docstring.
    from sipdispatch.kube import Kube, locate  # noqa: PLC0415
    from sipdispatch.proxy.kubetable import KubeTableSource  # noqa: PLC0415
    from sipdispatch.proxy.reporting import (  # noqa: PLC0415
        Reporter,
        ReportSchedule,
        companions,
    )

    if args.report and (args.report_interval <= 0 or args.report_heartbeat < args.report_interval):
        raise ValueError("--report-interval must be > 0 and at most --report-heartbeat")
    kube = Kube(locate(args.kubeconfig))
    namespace, _, name = str(args.kubernetes_table).rpartition("/")
    namespace = namespace or os.environ.get("POD_NAMESPACE") or kube.namespace
    source = KubeTableSource(
        kube, namespace, name, algorithm=args.algorithm, default_set=args.default_set
    )
    reporter = None
    if args.report:
        reporter = Reporter(
            source,
            args.replica or os.environ.get("POD_NAME") or socket.gethostname(),
            ReportSchedule(args.report_interval, args.report_heartbeat),
            os.environ.get("POD_UID") or None,
        )
    return source, companions(source, reporter)
