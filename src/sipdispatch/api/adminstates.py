"""What ``sipdispatch-ctl set-state`` makes of a DispatcherSet's ``spec.adminStates``. Pure.

Kamailio's codes map onto the declarative states: ``dx`` (or ``d``) holds the destination
disabled, ``dr`` holds it draining, and ``ap``/``ip``/``tp`` and the others lift the hold,
leaving the destination to the replicas' probing. One destination has at most one entry: a
new code replaces the entry that names the same URI however it is spelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sipdispatch.dispatch import health as _health
from sipdispatch.dispatch import uris as _uris

__all__ = ["held_state", "with_state"]


def held_state(code: str) -> str | None:
    """The declarative state of a ``set-state`` code (None: the code lifts any hold);
    ``InvalidStateError`` naming the known codes for any other."""
    text = code.strip().lower()
    if text not in _health.ADMIN_CODES:
        known = ", ".join(sorted(_health.ADMIN_CODES))
        raise _health.InvalidStateError(f"unknown state {code!r}; expected one of {known}")
    if text == "dr":
        return "draining"
    return "disabled" if text[0] == "d" else None


def _same(entry: Mapping[str, Any], identity: str) -> bool:
    uri = entry.get("uri")
    if not isinstance(uri, str):
        return False
    try:
        return str(_uris.parse_sip_uri(uri)) == identity
    except ValueError:
        return False  # the operator reports it; not the entry this call is about


def with_state(
    entries: Sequence[Mapping[str, Any]], code: str, uri: str, reason: str = ""
) -> list[dict[str, Any]]:
    """``entries`` (``spec.adminStates`` as stored) after ``set-state code uri``: other
    entries kept as they are, in their order; ``ValueError`` for a URI that is not SIP."""
    state = held_state(code)
    identity = str(_uris.parse_sip_uri(uri))
    kept = [dict(entry) for entry in entries if not _same(entry, identity)]
    if state is not None:
        entry: dict[str, Any] = {"uri": uri, "state": state}
        if reason:
            entry["reason"] = reason
        kept.append(entry)
    return kept
