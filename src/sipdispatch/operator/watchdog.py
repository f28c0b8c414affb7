"""The liveness of the operator's watches: a stalled watch fails ``/healthz``.

kopf's own liveness endpoint answers as long as the event loop runs, which a stalled watch
does not stop: an API server that hangs (paused, overloaded, behind a black-holed connection)
leaves every stream open and silent, and the operator renders nothing, silently. Every watch
here is bounded instead: the API server ends each request after the watch timeout, and the
client gives up on a silent one shortly after, so a healthy watch hears from the API server at
least once per timeout (an event, a bookmark, or a new request answered).

``WatchDog`` follows the operator's Lease with the same credentials and the same timeouts as
kopf's streams (the leader renews it every few seconds, so it changes often), and its probe
fails once nothing was heard for longer than ``stall_after``. Once the API server answers
again, every stream resumes by itself and the probe passes again; a kubelet restarts an
operator whose probe keeps failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sipdispatch.kube import LEASE, Follow, Kube

__all__ = ["WatchDog", "WatchStalledError"]


class WatchStalledError(RuntimeError):
    """The liveness probe's failure: nothing heard on the watch for too long."""


class WatchDog:
    """Follows Lease ``namespace/name``; ``check()`` fails when that watch stalls."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        *,
        watch_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.follow = Follow(
            kube,
            LEASE,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout=watch_timeout,
            idle=watch_timeout + 10.0,
        )
        #: a healthy watch hears something at least once per watch timeout
        self.stall_after = watch_timeout + 10.0
        self.clock = clock
        self.started = clock()

    async def run(self) -> None:
        async for _ in self.follow.events():
            pass  # only the hearing matters (Follow.heard)

    def silence(self) -> float:
        """Seconds since the API server last answered on this watch (or since the start)."""
        heard = self.follow.heard
        return self.clock() - (self.started if heard is None else heard)

    def check(self) -> float:
        """The silence in seconds, for the probe's answer; ``WatchStalledError`` past the bound."""
        silence = self.silence()
        if silence > self.stall_after:
            raise WatchStalledError(
                f"watch stalled: nothing heard from the API server for {silence:.0f}s "
                f"(bound {self.stall_after:g}s)"
            )
        return round(silence, 1)
