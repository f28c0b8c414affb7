"""Admission control: how many requests one source may send, and how many transactions live.

``SourceLimiter`` is pike-like: it counts the requests of each source IP address in fixed
one-second windows and refuses those over the rate, with an optional temporary ban of a source
that went over. Two rates, since two kinds of request cost the proxy very differently:

* a **new request** (out of dialog) may start a transaction and a fork to the gateways: it is
  held to ``source_rate``;
* an **in-dialog request** (one carrying the proxy's signed Route, recognised from its bytes by
  the ``;sig=`` of that Route) is routed statelessly, and one source can carry many dialogs (an
  SBC): it is held only to the much higher ``dialog_rate``. Forging the marker buys a sender
  that higher rate and nothing else: the core still checks the signature and answers 403.

Responses are never limited: they belong to transactions the proxy started, and one that is
not ours is dropped by its branch check, which costs less than counting it would.

Each check is O(1): two dict look-ups. Memory is bounded however many sources there are (a
spoofed flood has as many as it likes): the counts are dropped whole at each new window, and a
window tracks at most ``max_sources`` addresses; those that come when it is full share one
count, so the worst they can do is limit each other. Bans are bounded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["AdmissionSettings", "SourceLimiter"]

#: the key shared by the sources a full window has no room for
OVERFLOW: Final = "*"

#: the reasons a request is refused, as counted (and labelled in metrics)
SOURCE_RATE: Final = "source-rate"
DIALOG_RATE: Final = "dialog-rate"
BANNED: Final = "banned"
TRANSACTIONS: Final = "transactions"


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """Limits on what the core admits; each 0 turns its limit off."""

    #: new (out-of-dialog) requests one source IP may send per second: above what one SBC
    #: sends to one proxy process, below what that process can serve
    source_rate: int = 2500
    #: in-dialog requests one source IP may send per second
    dialog_rate: int = 10000
    #: seconds a source that went over either rate is refused altogether (0: no ban)
    ban: float = 0.0
    #: source addresses tracked per window (the rest share one count)
    max_sources: int = 65536
    #: answer a UDP request refused by rate with 503 (False: drop it; TCP always answers)
    reply_udp: bool = False
    #: transactions alive at once; a new request beyond them gets 503 (0: no cap)
    max_transactions: int = 20000
    #: seconds the 503s of admission control ask the sender to wait (Retry-After)
    retry_after: int = 5

    @property
    def limits_sources(self) -> bool:
        return self.source_rate > 0 or self.dialog_rate > 0


class SourceLimiter:
    """Per-source request counts over fixed one-second windows (see the module docstring)."""

    __slots__ = (
        "_banned",
        "_dialog",
        "_new",
        "_window_end",
        "ban",
        "counts",
        "dialog_rate",
        "max_sources",
        "source_rate",
    )

    def __init__(self, settings: AdmissionSettings) -> None:
        self.source_rate = settings.source_rate
        self.dialog_rate = settings.dialog_rate
        self.ban = settings.ban
        self.max_sources = max(1, settings.max_sources)
        self._new: dict[str, int] = {}
        self._dialog: dict[str, int] = {}
        self._banned: dict[str, float] = {}
        self._window_end = 0.0
        #: requests refused so far, by reason
        self.counts: dict[str, int] = {SOURCE_RATE: 0, DIALOG_RATE: 0, BANNED: 0}

    def admit(self, host: str, in_dialog: bool, now: float) -> str:
        """Count one request from ``host``: "" when admitted, else the reason it is not."""
        if now >= self._window_end:
            self._next_window(now)
        if self._banned:
            until = self._banned.get(host)
            if until is not None:
                if now < until:
                    self.counts[BANNED] += 1
                    return BANNED
                del self._banned[host]
        if in_dialog:
            rate, counts, reason = self.dialog_rate, self._dialog, DIALOG_RATE
        else:
            rate, counts, reason = self.source_rate, self._new, SOURCE_RATE
        if rate <= 0:
            return ""
        seen = counts.get(host)
        if seen is None:
            if len(counts) >= self.max_sources:
                host = OVERFLOW
                seen = counts.get(host, 0)
            else:
                seen = 0
        counts[host] = seen + 1
        if seen < rate:
            return ""
        self.counts[reason] += 1
        if self.ban > 0 and host != OVERFLOW and len(self._banned) < self.max_sources:
            self._banned[host] = now + self.ban
        return reason

    def _next_window(self, now: float) -> None:
        self._new = {}
        self._dialog = {}
        self._window_end = now + 1.0
        if self._banned:
            self._banned = {host: t for host, t in self._banned.items() if t > now}

    @property
    def sources(self) -> int:
        """Source addresses counted in the current window."""
        return len(self._new) + len(self._dialog)

    @property
    def banned(self) -> int:
        """Source addresses banned (some may have served their time already)."""
        return len(self._banned)
