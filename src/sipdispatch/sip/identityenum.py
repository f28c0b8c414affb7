"""Enums hashed by identity, for the states every message's handling looks up.

``Enum.__hash__`` is Python code (it hashes the member's name), which every look-up of a
dict or set keyed by members pays: the transaction state tables do that for each response.
A member is a singleton compared by identity, so its identity is as good a hash, and
``object.__hash__`` computes it in C.
"""

from __future__ import annotations

import enum

__all__ = ["IdentityEnum"]


class IdentityEnum(enum.Enum):
    """An Enum whose members hash by identity (see the module's docstring)."""

    __hash__ = object.__hash__
