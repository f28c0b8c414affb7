"""Following objects: list, then watch from the list's resourceVersion, for as long as asked.

Each watch request resumes from the last resourceVersion seen (bookmarks move it too); when
that version is too old for the API server (410 Gone) the objects are listed again, and the
list says what changed meanwhile. Other failures are retried with a backoff (0.5 s doubling
to 30 s). Selectors go to list and watch alike, so RBAC can limit a reader to the objects it
follows (``resourceNames`` with a ``metadata.name`` field selector).

A stream that stays silent longer than ``idle`` (no event, no bookmark: the API server sends
one about once a minute) is taken for dead and watched again from the last resourceVersion.
(aiohttp does not always tell a stream whose connection was closed under it.)
``heard`` is when the API server last answered (a list, a watch request, an event, a
bookmark): a liveness check reads a stalled watch from it.

The stream is read here rather than through kubernetes_asyncio's ``Watch``: that one makes an
extra ``ApiClient`` per request (an SSL context from the system's CA store, about 16 ms with
the loop blocked), turns every event into a generated model, and, given a server-side timeout,
retries a 410 from the same stale version instead of listing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from sipdispatch.kube.client import Kube
from sipdispatch.kube.errors import KubeError
from sipdispatch.kube.objects import Kind, list_objects

__all__ = ["Changed", "Follow", "Listed"]

log = logging.getLogger(__name__)

GONE = 410


@dataclass(frozen=True)
class Listed:
    """A fresh list: every object that matches, now."""

    objects: list[dict[str, Any]]


@dataclass(frozen=True)
class Changed:
    """One watch event: ``type`` is ADDED, MODIFIED or DELETED."""

    type: str
    object: dict[str, Any]


class Follow:
    """The objects of ``kind`` in ``namespace`` that match the selectors, followed."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespace: str,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        timeout: float = 300.0,
        idle: float = 90.0,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.selectors = {
            key: value
            for key, value in (
                ("field_selector", field_selector),
                ("label_selector", label_selector),
            )
            if value
        }
        self.timeout = timeout
        self.idle = idle
        #: set once a watch request has been answered (the stream is open)
        self.answered = asyncio.Event()
        #: where the next watch starts ("" before a list, or after a 410)
        self.resource_version = ""
        self.description = f"{kind.plural} in {namespace}"
        #: time.monotonic() of the API server's last answer on this watch (None: not yet)
        self.heard: float | None = None

    async def list(self) -> list[dict[str, Any]]:
        objects, self.resource_version = await list_objects(
            self.kube, self.kind, self.namespace, **self.selectors
        )
        self.heard = time.monotonic()
        return objects

    async def watch(self) -> AsyncIterator[Changed]:
        """The events of one watch request, until the server ends it (``timeout`` at the
        latest) or answers 410 Gone (then ``resource_version`` is cleared)."""
        api, method, fixed = self.kind.operation("list")
        log.debug("watching %s from resourceVersion %s", self.description, self.resource_version)
        response = await self.kube.call(
            api,
            method,
            **fixed,
            namespace=self.namespace,
            **self.selectors,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=int(self.timeout),
            watch=True,
            stream=True,
            _request_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=self.timeout + 30
            ),
        )
        self.answered.set()
        self.heard = time.monotonic()
        try:
            while line := await self._next_line(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == GONE:
                        log.info("watch of %s expired (410 Gone): listing again", self.description)
                        self.resource_version = ""
                        return
                    raise KubeError(int(obj.get("code") or 0), str(obj.get("message")))
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.resource_version = str(version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield Changed(str(kind), obj)
        finally:
            response.release()

    async def _next_line(self, response: aiohttp.ClientResponse) -> bytes:
        """The next non-empty line; b"" at the end of the stream, or when nothing came for
        ``idle`` seconds (the API server sends a bookmark about once a minute, so a silent
        stream is a dead one: watched again from the last resourceVersion)."""
        try:
            async with asyncio.timeout(self.idle):
                while line := await response.content.readline():
                    if line.strip():
                        self.heard = time.monotonic()  # an event or a bookmark
                        return line
        except TimeoutError:
            log.warning(
                "watch of %s silent for %gs: watching again from resourceVersion %s",
                self.description,
                self.idle,
                self.resource_version,
            )
        return b""

    async def events(self) -> AsyncIterator[Listed | Changed]:
        """Listed first, then changes; listed again after a 410. Never ends; failures are
        logged and retried."""
        delay = 0.5
        while True:
            try:
                if not self.resource_version:
                    yield Listed(await self.list())
                async for change in self.watch():
                    yield change
                delay = 0.5
            except (KubeError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning(
                    "watch of %s failed, retrying in %.1fs: %s", self.description, delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
