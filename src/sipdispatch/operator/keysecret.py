"""The proxies' Secret: made by the operator when missing, its route keys rotated on schedule.

The chart renders no Secret (a random value in a template changes at every ``helm template``,
so GitOps tools would see a difference for ever): the operator makes it, once, in its own
namespace, with a random route key and control token from Python's ``secrets``. Keys it finds
are never replaced; a key missing from a Secret that exists is added. The route key list then
follows `routekeys.plan`; the control token is never rotated (a token in use by an admin's
script would stop working without notice).

Every write is a JSON merge patch that carries the resourceVersion read, so a change made
meanwhile (a rotation asked by annotation, a second operator) is never overwritten: the patch
is refused with 409 and the next pass reads again. Only the operator that holds the Lease
writes. The Secret is read every ``interval`` seconds: a get of one object, which the RBAC
allows by name (a watch of one Secret would need list and watch on all of them).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sipdispatch.api.routekeys import KeyListError, parse_keys
from sipdispatch.kube import SECRET, Kube, KubeError, objects
from sipdispatch.operator.k8s import MANAGED_BY, OPERATOR
from sipdispatch.operator.routekeys import (
    ROTATE_ANNOTATION,
    STATE_ANNOTATION,
    Policy,
    plan,
    read_state,
    write_state,
)

__all__ = ["CHECK_INTERVAL", "KeySecret", "SecretKeeper", "new_key"]

log = logging.getLogger(__name__)

#: how often the Secret is read, in seconds
CHECK_INTERVAL = 10.0
NOT_FOUND = 404
CONFLICT = 409


def new_key() -> str:
    """A fresh route key or token: 64 hex characters (256 bits), as ``openssl rand -hex 32``."""
    return secrets.token_hex(32)


@dataclass(frozen=True)
class KeySecret:
    """Which Secret, and its keys (``token_key`` empty: no control token in it)."""

    namespace: str
    name: str
    route_key: str
    token_key: str = ""


class SecretKeeper:
    """Keeps ``where`` as `routekeys.plan` and ``policy`` say, while ``leading()``."""

    def __init__(
        self,
        kube: Kube,
        where: KeySecret,
        policy: Policy,
        *,
        interval: float = CHECK_INTERVAL,
        leading: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.where = where
        self.policy = policy
        self.interval = interval
        self.leading = leading
        self.clock = clock
        self._complaint = ""  # the last problem logged, said once and not every pass

    async def run(self) -> None:
        """A pass every ``interval`` while leading, and one at once on taking the lead (a
        fresh install's proxies wait for the Secret)."""
        last: float | None = None
        while True:
            if not self.leading():
                last = None
            elif last is None or time.monotonic() - last >= self.interval:
                last = time.monotonic()
                try:
                    await self.tend()
                except KubeError as exc:
                    self._complain(f"cannot keep Secret {self._name}: {exc}")
            await asyncio.sleep(min(1.0, self.interval))

    @property
    def _name(self) -> str:
        return f"{self.where.namespace}/{self.where.name}"

    async def tend(self) -> None:
        """One pass: make the Secret, fill in a missing key, or take the next rotation step."""
        where = self.where
        try:
            found = await objects.get(self.kube, SECRET, where.namespace, where.name)
        except KubeError as exc:
            if exc.status != NOT_FOUND:
                raise
            await self._create()
            return
        meta = found.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        data: dict[str, str] = dict(found.get("data") or {})
        patch_data: dict[str, str] = {}
        if where.token_key and where.token_key not in data:
            patch_data[where.token_key] = _b64(new_key())
            log.info("Secret %s: made the control token %r", self._name, where.token_key)
        keys: list[str] = []
        if where.route_key in data:
            origin = f"Secret {self._name} key {where.route_key!r}"
            try:
                text = base64.b64decode(data[where.route_key]).decode()
                keys = [key.decode() for key in parse_keys(text, origin)]
            except (KeyListError, ValueError) as exc:
                # Never replaced: the proxies keep the keys they read last, and a person fixes it.
                self._complain(f"route keys left as they are, not rotated: {exc}")
                return
        result = plan(
            keys,
            read_state(annotations.get(STATE_ANNOTATION)),
            str(annotations.get(ROTATE_ANNOTATION) or ""),
            self.clock(),
            policy=self.policy,
            make_key=new_key,
        )
        state = write_state(result)
        if list(result.keys) != keys:
            patch_data[where.route_key] = _b64(_key_list(result.keys))
        if not patch_data and state == annotations.get(STATE_ANNOTATION):
            return
        patch: dict[str, Any] = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {STATE_ANNOTATION: state},
            },
        }
        if patch_data:
            patch["data"] = patch_data
        try:
            await objects.merge_patch(self.kube, SECRET, where.namespace, where.name, patch)
        except KubeError as exc:
            if exc.status == CONFLICT:
                return  # changed meanwhile: read again next pass
            raise
        self._complaint = ""
        for change in result.changes:
            log.info("Secret %s: %s", self._name, change)

    async def _create(self) -> None:
        where = self.where
        result = plan([], {}, "", self.clock(), policy=self.policy, make_key=new_key)
        data = {where.route_key: _b64(_key_list(result.keys))}
        if where.token_key:
            data[where.token_key] = _b64(new_key())
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": where.name,
                "namespace": where.namespace,
                "labels": {MANAGED_BY: OPERATOR, "app.kubernetes.io/component": "proxy"},
                "annotations": {STATE_ANNOTATION: write_state(result)},
            },
            "data": data,
        }
        try:
            await objects.create(self.kube, SECRET, where.namespace, body)
        except KubeError as exc:
            if exc.status == CONFLICT:
                return  # made meanwhile (by a person or another operator): kept as it is
            raise
        log.info("Secret %s: made, %s", self._name, "; ".join(result.changes))

    def _complain(self, message: str) -> None:
        if message != self._complaint:
            log.error("%s", message)
        self._complaint = message


def _key_list(keys: tuple[str, ...]) -> str:
    return "# route keys: the first one signs (kept by sipdispatch-operator)\n" + "".join(
        f"{key}\n" for key in keys
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
