"""The keys that sign Record-Routes: a list, read from a file or the environment, checked, and
re-read while the proxy runs when the file changes.

The list is text, one key per line (blank lines and ``#`` comments are skipped): the first key
signs, every key is accepted. That makes a rotation three edits of the file, each applied on
every replica before the next: add the new key second, make it first, remove the old one once
the dialogs it signed have ended. A Kubernetes Secret mounted as a volume is such a file, and
the kubelet updates it in place.

A key must have at least `MIN_KEY_LENGTH` characters: a short one is brute-forced offline from
a single Record-Route. A file given but empty is an error, never a reason to fall back to a
random key (each replica would then refuse the others' routes). While the proxy runs, a file
that turns unusable is reported and the keys in use stay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sipdispatch.api.routekeys import MIN_KEY_LENGTH, KeyListError, fingerprint, parse_keys
from sipdispatch.proxy.core import Signer

__all__ = [
    "MIN_KEY_LENGTH",
    "POLL_INTERVAL",
    "KeyFileWatch",
    "KeyListError",
    "describe",
    "fingerprint",
    "parse_keys",
    "read_key_file",
]

log = logging.getLogger(__name__)

#: how often a key file is read again, in seconds
POLL_INTERVAL = 2.0


def read_key_file(path: Path, origin: str) -> tuple[bytes, ...]:
    """The keys of the file at ``path``; raises `KeyListError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyListError(f"{origin}: cannot read {path}: {exc}") from None
    return parse_keys(text, f"{origin} {path}")


def describe(keys: tuple[bytes, ...]) -> str:
    """What a key list does, by fingerprints: which key signs and which are accepted too."""
    text = f"signing with key {fingerprint(keys[0])}"
    if len(keys) > 1:
        text += ", also accepting " + ", ".join(fingerprint(key) for key in keys[1:])
    return text


class KeyFileWatch:
    """Reads the key file again every `POLL_INTERVAL` and hands a changed list to the signer.

    Polled, and by content: an inotify watch on the file misses a mounted Secret's update (the
    kubelet swaps a symlink to a new directory), and the file is a few lines.
    """

    def __init__(
        self,
        path: Path,
        signer: Signer,
        keys: tuple[bytes, ...],
        *,
        interval: float = POLL_INTERVAL,
        on_change: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.path = path
        self.signer = signer
        self.keys = keys
        self.interval = interval
        #: told the fingerprints of each new list, signing key first (the metrics)
        self.on_change = on_change
        self._broken = False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def check(self) -> bool:
        """Read the file once; True when the signer now uses a different key list."""
        try:
            keys = read_key_file(self.path, "--secret-file")
        except KeyListError as exc:
            if not self._broken:  # said once, not every poll
                log.error("route keys not reloaded, the previous ones stay in use: %s", exc)
            self._broken = True
            return False
        self._broken = False
        if keys == self.keys:
            return False
        self.keys = keys
        self.signer.use(*keys)
        log.info("route keys reloaded from %s: %s", self.path, describe(keys))
        if self.on_change is not None:
            self.on_change([fingerprint(key) for key in keys])
        return True
