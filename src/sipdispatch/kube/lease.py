"""Leader election on a coordination.k8s.io Lease, the way client-go's leaderelection does it.

One ``Elector`` per process takes part; the one whose identity the Lease holds leads. The
leader renews the Lease every ``retry`` seconds (a replace by resourceVersion: of two writers
racing, one gets 409 Conflict). Another candidate takes the Lease only when its record has not
changed for ``duration`` seconds *as this process observed it* (its own monotonic clock, never
the holder's timestamps, so clock skew between nodes cannot hand out the Lease twice).

A leader that cannot renew for ``deadline`` seconds (shorter than ``duration``) stops leading
before anyone else may take over, so two leaders never overlap while the clocks run at the same
rate. On a clean stop the leader releases the Lease (no holder), so a successor starts at once
instead of after ``duration``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sipdispatch.kube.client import Kube
from sipdispatch.kube.errors import KubeError
from sipdispatch.kube.objects import LEASE, create, get, replace

__all__ = ["Elector"]

log = logging.getLogger(__name__)

NOT_FOUND = 404
CONFLICT = 409


def _micro_time() -> str:
    # metav1.MicroTime
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Campaign for the Lease ``namespace/name`` as ``identity``; ``leading`` says whether
    this process leads now, and ``on_change(leading)`` is called whenever that changes."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration: float = 15.0,
        deadline: float = 10.0,
        retry: float = 2.0,
        on_change: Callable[[bool], None] = lambda leading: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry < deadline < duration:
            raise ValueError("the Lease needs retry < deadline < duration")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.deadline = deadline
        self.retry = retry
        self.on_change = on_change
        self.clock = clock
        self.leading = False
        self._renewed = 0.0  # when this process last renewed, as leader
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0

    async def run(self) -> None:
        """Campaign until cancelled; then release the Lease if this process holds it."""
        try:
            while True:
                await self._round()
                await asyncio.sleep(self.retry)
        finally:
            if self.leading:
                self._set(leading=False)
                await asyncio.shield(self._release())

    async def _round(self) -> None:
        try:
            won = await self._try()
        except KubeError as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            won = False
            if self.leading and self.clock() - self._renewed < self.deadline:
                return  # keep leading until the deadline: one failed renewal is no reason
        if won:
            self._renewed = self.clock()
        self._set(leading=won)

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; whether this process holds it now."""
        try:
            lease = await get(self.kube, LEASE, self.namespace, self.name)
        except KubeError as exc:
            if exc.status != NOT_FOUND:
                raise
            return await self._write(None)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        now = self.clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if holder and holder != self.identity and now - self._observed_at < self.duration:
            return False  # held by another, and renewed within the lease duration
        return await self._write(lease)

    async def _write(self, lease: dict[str, Any] | None) -> bool:
        stamp = _micro_time()
        spec: dict[str, Any] = dict((lease or {}).get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = transitions + 1 if lease else 0
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.duration)),
            renewTime=stamp,
        )
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            if lease is None:
                await create(self.kube, LEASE, self.namespace, body)
            else:
                version = (lease.get("metadata") or {}).get("resourceVersion")
                body["metadata"]["resourceVersion"] = version
                await replace(self.kube, LEASE, body)
        except KubeError as exc:
            if exc.status == CONFLICT:  # another candidate wrote first (or it exists already)
                return False
            raise
        return True

    async def _release(self) -> None:
        try:
            lease = await get(self.kube, LEASE, self.namespace, self.name)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time())
            lease["spec"] = spec
            await replace(self.kube, LEASE, lease)
            log.info("lease %s/%s released", self.namespace, self.name)
        except KubeError as exc:
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, exc)

    def _set(self, *, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            log.info(
                "lease %s/%s: %s",
                self.namespace,
                self.name,
                "leading" if leading else "not leading",
            )
            self.on_change(leading)
