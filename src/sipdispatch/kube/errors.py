"""The two ways talking to Kubernetes fails: no credentials, or a request that did not succeed."""

from __future__ import annotations

__all__ = ["KubeConfigError", "KubeError"]


class KubeConfigError(ValueError):
    """No usable credentials: the message says what was looked for."""


class KubeError(RuntimeError):
    """A request that did not succeed. ``status`` is the API server's HTTP status, or 0 when no
    answer came (connection refused, reset, timed out)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
