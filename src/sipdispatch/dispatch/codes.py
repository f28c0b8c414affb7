"""Status codes as the configuration lists them (``["2xx", "404"]``), and the failover defaults.

Plain values and functions, below both the configuration models (``config.py``, pydantic) and
the proxy core's settings (``CoreSettings``): each failover default is declared here once and
read by both, and the hot path never imports pydantic to learn it.
"""

from __future__ import annotations

__all__ = [
    "FAILOVER_CODES",
    "FAILOVER_ON_TIMEOUT",
    "MAX_ATTEMPTS",
    "code_matches",
    "expand_codes",
    "failover_statuses",
]

#: final responses that make a request move on to the next destination (codes and classes)
FAILOVER_CODES: tuple[str, ...] = ("5xx",)
#: whether a destination that does not answer in time is failed over (failover.onTimeout)
FAILOVER_ON_TIMEOUT = True
#: destinations tried for one request, the first one included
MAX_ATTEMPTS = 3


def code_matches(codes: tuple[str, ...] | list[str], status: int) -> bool:
    """Whether `status` is in a list of codes and classes (`["2xx", "404"]`)."""
    return str(status) in codes or f"{status // 100}xx" in codes


def expand_codes(codes: tuple[str, ...] | list[str]) -> frozenset[int]:
    """Every status code a list of codes and classes covers."""
    return frozenset(status for status in range(100, 700) if code_matches(codes, status))


def failover_statuses(codes: tuple[str, ...] | list[str], on_timeout: bool) -> frozenset[int]:
    """The final responses that fail over: ``codes``, and a 408 reply when timeouts fail over
    (a 408 is a timeout further down)."""
    statuses = expand_codes(codes)
    return statuses | {408} if on_timeout else statuses
