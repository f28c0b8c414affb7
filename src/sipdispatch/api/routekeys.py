"""The route key list both planes read: the proxy signs with it, the operator keeps it.

Text, one key per line (blank lines and ``#`` comments are skipped): the first key signs
Record-Routes, every key is accepted. A key has at least `MIN_KEY_LENGTH` characters: a short
one is brute-forced offline from a single Record-Route.
"""

from __future__ import annotations

import hashlib

__all__ = ["MIN_KEY_LENGTH", "KeyListError", "fingerprint", "parse_keys"]

#: the shortest key accepted, in characters (``openssl rand -hex 32`` gives 64)
MIN_KEY_LENGTH = 32


class KeyListError(ValueError):
    """A key list that cannot be used; the message names where it came from."""


def parse_keys(text: str, origin: str) -> tuple[bytes, ...]:
    """The keys of a key list, signing key first; ``origin`` (a flag, a variable, a Secret)
    names it in errors."""
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_LENGTH:
            raise KeyListError(
                f"{origin}: the key on line {number} has {len(key)} characters, at least "
                f"{MIN_KEY_LENGTH} are required (e.g. openssl rand -hex 32)"
            )
        keys.append(key.encode())
    if not keys:
        raise KeyListError(f"{origin}: no key in it (one key per line, the first one signs)")
    return tuple(dict.fromkeys(keys))  # a key listed twice counts once


def fingerprint(key: bytes) -> str:
    """A short name for a key, for logs: the same on every replica, and no help in guessing it."""
    return hashlib.sha256(key).hexdigest()[:8]
