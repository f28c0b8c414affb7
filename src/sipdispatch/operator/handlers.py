"""kopf handlers: thin. Indexes keep the objects; events mark a proxy dirty for the reconciler.

kopf calls no event handler before every index has seen its initial listing, so the first
pass renders from the whole cluster state, never from a half-listed one (which would take
endpoints not listed yet for endpoints gone, and start draining them).

No finalizers: deleting a DispatcherSet needs no cleanup of its own, the next pass renders the
table without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from sipdispatch.api import models
from sipdispatch.api.names import GATEWAY_GRANT, PROXY_LABEL
from sipdispatch.kube import Elector
from sipdispatch.operator import k8s, metrics
from sipdispatch.operator.controller import Controller, Indexes
from sipdispatch.operator.endpoints import SERVICE_NAME_LABEL, granted_namespaces
from sipdispatch.operator.keysecret import SecretKeeper
from sipdispatch.operator.watchdog import WatchDog, WatchStalledError

__all__ = ["Options"]

Key = tuple[str, str]


class Options(kopf.Memo):
    """The operator-wide memo: the controller, the watch settings and what runs beside kopf."""

    controller: Controller
    watch_timeout: float
    kubeconfig: Path | None
    #: watching listed namespaces only: no cluster-wide scans (the namespaced RBAC has none)
    namespaced: bool
    #: leader election on the operator's Lease (None: this process always writes)
    elector: Elector | None
    #: the liveness check of the watches (None without a Lease to follow)
    watchdog: WatchDog | None
    #: the proxies' Secret and its route keys (None: the Secret is someone else's)
    keeper: SecretKeeper | None
    #: where /metrics is served (None: not served)
    metrics_url: str | None
    tasks: list[asyncio.Task[None]]
    runners: list[Any]


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    # kopf's bodies are live views of the latest object; the index keeps a snapshot.
    return copy.deepcopy(dict(body))


@kopf.index(models.GROUP, models.VERSION, "dispatchersets")
def dispatchersets(
    namespace: str | None, spec: Mapping[str, Any], body: Mapping[str, Any], **_: Any
) -> dict[Key, dict[str, Any]]:
    return {(namespace or "", str(spec.get("proxy") or models.DEFAULT_PROXY)): _plain(body)}


@kopf.index("discovery.k8s.io", "v1", "endpointslices", labels={SERVICE_NAME_LABEL: kopf.PRESENT})
def endpointslices(
    namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any
) -> dict[Key, dict[str, Any]]:
    slim = {
        "metadata": {"name": body["metadata"]["name"]},
        "addressType": body.get("addressType"),
        "ports": copy.deepcopy(body.get("ports") or []),
        "endpoints": copy.deepcopy(body.get("endpoints") or []),
    }
    return {(namespace or "", labels[SERVICE_NAME_LABEL]): slim}


@kopf.index("v1", "services", annotations={GATEWAY_GRANT: kopf.PRESENT})
def gatewaygrants(
    namespace: str | None, name: str, annotations: Mapping[str, str], **_: Any
) -> dict[Key, frozenset[str]]:
    return {(namespace or "", name): granted_namespaces(annotations.get(GATEWAY_GRANT))}


@kopf.index(models.GROUP, models.VERSION, "dispatcherreports")
def dispatcherreports(
    namespace: str | None, spec: Mapping[str, Any], body: Mapping[str, Any], **_: Any
) -> dict[Key, dict[str, Any]]:
    return {(namespace or "", str(spec.get("proxy") or models.DEFAULT_PROXY)): _plain(body)}


@kopf.index("v1", "configmaps", labels={k8s.MANAGED_BY: k8s.OPERATOR, PROXY_LABEL: kopf.PRESENT})
def tables(
    namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any
) -> dict[Key, dict[str, Any]]:
    return {(namespace or "", labels[PROXY_LABEL]): _plain(body)}


def _bound(memo: Options, kwargs: Mapping[str, Any]) -> Controller:
    controller = memo.controller
    if controller.indexes is None:
        controller.bind(
            Indexes(
                sets=kwargs["dispatchersets"],
                slices=kwargs["endpointslices"],
                reports=kwargs["dispatcherreports"],
                tables=kwargs["tables"],
                grants=kwargs["gatewaygrants"],
            )
        )
    return controller


@kopf.on.event(models.GROUP, models.VERSION, "dispatchersets")
def dispatcherset_event(namespace: str | None, memo: Options, **kwargs: Any) -> None:
    # Any proxy of the namespace: a set may just have moved from one proxy to another.
    _bound(memo, kwargs).touch(namespace or "")


@kopf.on.event(
    "discovery.k8s.io", "v1", "endpointslices", labels={SERVICE_NAME_LABEL: kopf.PRESENT}
)
def endpointslice_event(
    namespace: str | None, labels: Mapping[str, str], memo: Options, **kwargs: Any
) -> None:
    _bound(memo, kwargs).slice_changed(namespace or "", labels[SERVICE_NAME_LABEL])


@kopf.on.event("v1", "services")
def service_event(
    type: str | None,
    namespace: str | None,
    name: str,
    annotations: Mapping[str, str],
    memo: Options,
    **kwargs: Any,
) -> None:
    # Every Service, not only annotated ones: a grant that is removed must be seen too.
    granted = (
        frozenset() if type == "DELETED" else granted_namespaces(annotations.get(GATEWAY_GRANT))
    )
    _bound(memo, kwargs).grant_changed(namespace or "", name, granted)


@kopf.on.event(models.GROUP, models.VERSION, "dispatcherreports")
def dispatcherreport_event(
    namespace: str | None, spec: Mapping[str, Any], memo: Options, **kwargs: Any
) -> None:
    _bound(memo, kwargs).touch(namespace or "", str(spec.get("proxy") or models.DEFAULT_PROXY))


@kopf.on.event("v1", "configmaps", labels={k8s.MANAGED_BY: k8s.OPERATOR, PROXY_LABEL: kopf.PRESENT})
def table_event(
    namespace: str | None, labels: Mapping[str, str], memo: Options, **kwargs: Any
) -> None:
    # A table edited or deleted by hand is rendered again.
    _bound(memo, kwargs).touch(namespace or "", labels[PROXY_LABEL])


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Options, **_: Any) -> None:
    # Bounded watches (kopf's own advice): the API server ends each request after the timeout,
    # the client gives up on a silent one soon after, and a stream with no event or bookmark
    # is opened again; so a stalled API server cannot leave a stream hanging for ever.
    timeout = memo.watch_timeout
    settings.watching.server_timeout = max(1, round(timeout))
    settings.watching.client_timeout = timeout + 10.0
    settings.watching.connect_timeout = 10.0
    settings.watching.inactivity_timeout = min(settings.watching.inactivity_timeout, timeout + 10)
    settings.networking.request_timeout = 30.0
    settings.networking.connect_timeout = 10.0
    # Watching listed namespaces, kopf need not scan namespaces and CRDs cluster-wide (which
    # a namespaced Role cannot allow): the CRDs must then be installed before it starts.
    settings.scanning.disabled = memo.namespaced
    settings.posting.level = 30  # logging.WARNING: only problems become kopf's own Events
    loop = asyncio.get_running_loop()
    if memo.elector is not None:
        memo.controller.leading = False  # until the Lease is ours
        memo.elector.on_change = memo.controller.lead
        memo.tasks.append(loop.create_task(memo.elector.run(), name="lease"))
    if memo.watchdog is not None:
        memo.tasks.append(loop.create_task(memo.watchdog.run(), name="watchdog"))
    if memo.keeper is not None:
        memo.tasks.append(loop.create_task(memo.keeper.run(), name="route-keys"))
    if memo.metrics_url:
        watchdog = memo.watchdog
        memo.controller.metrics.live(
            lambda: memo.controller.leading,
            lambda: None if watchdog is None else round(watchdog.silence(), 1),
        )
        memo.runners.append(await metrics.serve(memo.metrics_url, memo.controller.metrics))
    memo.controller.start()


@kopf.on.probe(id="watch")
def watch_probe(memo: Options, **_: Any) -> dict[str, Any]:
    """Part of /healthz: fails while the watch is stalled (see watchdog.py)."""
    answer: dict[str, Any] = {"leading": memo.controller.leading}
    if memo.watchdog is not None:
        try:
            answer["silenceSeconds"] = memo.watchdog.check()
        except WatchStalledError as exc:
            raise kopf.PermanentError(str(exc)) from None  # no retries: fail the probe now
    return answer


@kopf.on.cleanup()
async def cleanup(memo: Options, **_: Any) -> None:
    await memo.controller.stop()  # no writes from here on
    for task in memo.tasks:  # then the elector releases the Lease, for a successor to start
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    for runner in memo.runners:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    for side in (memo.elector, memo.watchdog, memo.keeper):
        if side is not None:
            await side.kube.close()
