"""``sipdispatch-ctl --dispatcherset NAME set-state``: the admin state written into the
DispatcherSet (``spec.adminStates``), which every proxy replica follows and keeps across
restarts, instead of one replica's memory.

The write is a JSON merge patch of ``spec.adminStates`` carrying the resourceVersion it was
computed from, so that two concurrent writers never lose each other's entry (a 409 Conflict
reads the set again and retries). It is made under its own field manager,
``sipdispatch-ctl``, so that a GitOps tool that owns the rest of the spec leaves it alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipdispatch.api import adminstates as _adminstates
from sipdispatch.api.names import GROUP, VERSION
from sipdispatch.kube import Kind, Kube, KubeConfigError, KubeError, locate
from sipdispatch.kube import objects as _objects

__all__ = ["FIELD_MANAGER", "KubeTarget", "set_state"]

DISPATCHERSETS = Kind(GROUP, VERSION, "dispatchersets")
FIELD_MANAGER = "sipdispatch-ctl"
ATTEMPTS = 5  # conflicts in a row before giving up: another writer keeps changing the set


class KubeCtlError(Exception):
    """The change could not be made; the message says why."""


@dataclass(frozen=True)
class KubeTarget:
    """Which DispatcherSet, where, as whom."""

    dispatcherset: str
    namespace: str | None = None  # None: the credentials' namespace
    kubeconfig: Path | None = None


async def _set_state(target: KubeTarget, set_id: int, code: str, uri: str, reason: str) -> str:
    kube = Kube(locate(target.kubeconfig))
    namespace = target.namespace or kube.namespace
    where = f"DispatcherSet {namespace}/{target.dispatcherset}"
    try:
        for _ in range(ATTEMPTS):
            found = await _objects.get(kube, DISPATCHERSETS, namespace, target.dispatcherset)
            spec: dict[str, Any] = found.get("spec") or {}
            if spec.get("setId") != set_id:
                raise KubeCtlError(f"{where} is set {spec.get('setId')}, not set {set_id}")
            before = list(spec.get("adminStates") or [])
            after = _adminstates.with_state(before, code, uri, reason)
            if after == before:
                return f"{where}: set {set_id} {uri} already {_describe(code)}"
            version = (found.get("metadata") or {}).get("resourceVersion")
            patch = {"metadata": {"resourceVersion": version}, "spec": {"adminStates": after}}
            try:
                await _objects.merge_patch(
                    kube,
                    DISPATCHERSETS,
                    namespace,
                    target.dispatcherset,
                    patch,
                    field_manager=FIELD_MANAGER,
                )
            except KubeError as exc:
                if exc.status == 409:
                    continue  # changed since it was read: read it again
                raise
            return f"{where}: set {set_id} {uri} {_describe(code)}"
        raise KubeCtlError(f"{where} kept changing; {ATTEMPTS} attempts conflicted")
    except KubeError as exc:
        hint = " (who may patch dispatchersets: see docs/operator.md)" if exc.status == 403 else ""
        raise KubeCtlError(f"{where}: {exc}{hint}") from None
    finally:
        await kube.close()


def _describe(code: str) -> str:
    state = _adminstates.held_state(code)
    if state is None:
        return "not held in spec.adminStates (probing decides)"
    return f"held {state} in spec.adminStates (every replica follows)"


def set_state(target: KubeTarget, set_id: int, code: str, uri: str, reason: str = "") -> str:
    """Write the admin state of ``uri`` into the DispatcherSet; what was done, for people.
    ``KubeCtlError`` (or ``ValueError`` for a bad code or URI) when nothing was written."""
    _adminstates.with_state([], code, uri)  # a bad code or URI fails before any request
    try:
        return asyncio.run(_set_state(target, set_id, code, uri, reason))
    except KubeConfigError as exc:
        raise KubeCtlError(str(exc)) from None
