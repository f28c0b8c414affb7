"""``sipdispatch-ctl``: the ``kamcmd dispatcher.*`` of sipdispatch, over the control API.

    sipdispatch-ctl list [--json]        dispatcher.list
    sipdispatch-ctl reload               dispatcher.reload
    sipdispatch-ctl set-state dx 1 URI   dispatcher.set_state
    sipdispatch-ctl ping                 is the proxy there?

    sipdispatch-ctl --dispatcherset NAME set-state dx 1 URI
                                         Kubernetes mode: written into the DispatcherSet,
                                         followed by every replica, kept across restarts

Standard library only (urllib), so it starts fast and works from any shell in the pod; the
Kubernetes mode loads the Kubernetes client only when it is asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:8080"


class ControlError(Exception):
    """The proxy could not be reached, or refused the call; the message says which."""


def _call(url: str, method: str, path: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise ControlError(f"{method} {path}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControlError(
            f"cannot reach the sipdispatch control API at {url}: {reason} "
            "(is the proxy running? see --url or SIPDISPATCH_CONTROL_URL)"
        ) from None


def format_table(view: dict[str, Any]) -> str:
    """The table of ``list``: one line per destination, like ``kamcmd dispatcher.list``.

    With DNS names in the table, a NAME column shows the name each address was resolved from,
    and a name without addresses shows as one line in state IX with the reason (NXDOMAIN,
    timeout...): it takes no calls."""
    header = (
        "SET",
        "URI",
        "NAME",
        "STATE",
        "PRIO",
        "WEIGHT",
        "CALLS",
        "AVG ms",
        "EST ms",
        "MAX ms",
        "TIMEOUTS",
        "REASON",
    )
    rows: list[tuple[str, ...]] = [header]
    for dest_set in view.get("sets", []):
        names = {n["uri"]: n for n in dest_set.get("names", [])}
        for dest in dest_set["destinations"]:
            lat = dest["latency"]
            name = names.get(dest.get("name") or "")
            reason = dest["reason"]
            if name is not None and name["state"] == "stale":
                reason += f"; dns: {name['reason']}, last answer kept"
            rows.append(
                (
                    str(dest_set["id"]),
                    dest["uri"],
                    dest.get("name") or "-",
                    dest["state"],
                    str(dest["priority"]),
                    str(dest["weight"]),
                    str(dest["activeCalls"]),
                    f"{lat['avg']:.2f}",
                    f"{lat['est']:.2f}",
                    f"{lat['max']:.2f}",
                    str(lat["timeouts"]),
                    reason,
                )
            )
        for name in names.values():
            if not name["addresses"]:
                reason = f"dns: {name['reason']} ({name['lookup']})"
                rows.append(
                    (str(dest_set["id"]), name["uri"], name["uri"], "IX", *("-",) * 7, reason)
                )
    if not any(dest_set.get("names") for dest_set in view.get("sets", [])):
        rows = [row[:2] + row[3:] for row in rows]  # no DNS names: the columns as before
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipdispatch-ctl", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("SIPDISPATCH_CONTROL_URL", DEFAULT_URL),
        help=f"control API of the proxy (default {DEFAULT_URL})",
    )
    parser.add_argument("--token-file", type=Path, help="bearer token for write calls")
    kube = parser.add_argument_group(
        "Kubernetes mode",
        "set-state writes the DispatcherSet's spec.adminStates: every proxy replica follows "
        "it and it survives restarts (the control API holds a state on one replica only)",
    )
    kube.add_argument(
        "--dispatcherset",
        metavar="NAME",
        help="the DispatcherSet of the destination (turns the Kubernetes mode on)",
    )
    kube.add_argument(
        "-n", "--namespace", help="its namespace (default: the credentials' namespace)"
    )
    kube.add_argument(
        "--kubeconfig", type=Path, help="credentials (default: KUBECONFIG, else in-cluster)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="destinations and their states")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    commands.add_parser("reload", help="re-read the table file")
    state = commands.add_parser("set-state", help="set a destination's state (ap, ip, dx, dr...)")
    state.add_argument("state")
    state.add_argument("set_id", type=int, metavar="SETID")
    state.add_argument("uri", metavar="URI")
    state.add_argument("--reason", default="", help="why (Kubernetes mode: shown in the status)")
    commands.add_parser("ping", help="check that the proxy answers")
    return parser


def _kube_set_state(args: argparse.Namespace) -> int:
    from sipdispatch.proxy import ctlkube  # noqa: PLC0415 (the client loads only for this mode)

    target = ctlkube.KubeTarget(args.dispatcherset, args.namespace, args.kubeconfig)
    try:
        print(ctlkube.set_state(target, args.set_id, args.state, args.uri, args.reason))
    except (ctlkube.KubeCtlError, ValueError) as exc:
        print(f"sipdispatch-ctl: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dispatcherset is not None:
        if args.command != "set-state":
            parser.error(
                f"{args.command} talks to one proxy's control API: drop --dispatcherset "
                "(kubectl get dispatcherset NAME -o yaml shows every replica's view)"
            )
        return _kube_set_state(args)
    token = os.environ.get("SIPDISPATCH_CONTROL_TOKEN", "")
    if args.token_file is not None:
        token = Path(args.token_file).read_text().strip()
    try:
        if args.command == "list":
            view = _call(args.url, "GET", "/v1/destinations", token)
            print(json.dumps(view, indent=2) if args.json else format_table(view))
        elif args.command == "reload":
            _call(args.url, "POST", "/v1/reload", token, {})  # writes take JSON only
            print("reloaded")
        elif args.command == "set-state":
            body = {"set": args.set_id, "uri": args.uri, "state": args.state}
            result = _call(args.url, "PUT", "/v1/destinations/state", token, body)
            print(f"set {result['set']} {result['uri']}: {result['state']}")
        else:
            _call(args.url, "GET", "/healthz", token)
            ready = _call(args.url, "GET", "/readyz", token)
            print(f"pong ({ready['status']})")
    except ControlError as exc:
        print(f"sipdispatch-ctl: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
