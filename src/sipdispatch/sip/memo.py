"""Bounded memos for parsers of values that repeat from message to message.

A trunk's URIs, the CSeq of each method, a dialog's Route and most start lines come back in
every message of a call and in every call: parsing each once per process, not once per
message, is where a proxy written in Python saves most. The parsed records are treated as
immutable everywhere, so one can be handed out many times. The memos are bounded (values come
from the network): a full memo is emptied and fills again with what recurs.
"""

from __future__ import annotations

from typing import Final, TypeVar

__all__ = ["MAX_KEY", "MEMO_SIZE", "remember"]

#: entries a memo holds before it is emptied
MEMO_SIZE: Final = 2048
#: longer texts are parsed every time: they are rarely repeated, and they would hold memory
MAX_KEY: Final = 256

T = TypeVar("T")


def remember(memo: dict[str, T], key: str, value: T) -> T:
    """Keep ``value`` as what ``key`` parses to (unless ``key`` is too long); returns it."""
    if len(key) <= MAX_KEY:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[key] = value
    return value
