"""The life of the route keys in the Secret the operator keeps: pure, the time passed in.

A key goes through three steps, the ones docs/dispatcher.md asks of a rotation by hand:

1. **added** second in the list (``pending``): every replica starts accepting it while all
   still sign with the key before it;
2. **signing**, moved first once it has been in the list for ``settle`` seconds (the time the
   kubelet takes to bring the new file to every pod); the key it replaces is **retired**;
3. **removed**, once retired for ``dialog_lifetime`` seconds: by then every route it signed
   has expired (``exp``), so no live dialog can still carry one.

At most ``max_keys`` stay in the list: past that, the oldest retired ones go first.

What the Secret does not say (when each key was made, when it began or stopped signing, which
rotation request was handled last) is kept in the annotation `STATE_ANNOTATION`, as JSON by
the keys' fingerprints, never the keys. A key the annotation does not know (a Secret made
before the operator kept it, a key added by hand) is taken as it stands: first, it signs from
now on; further down, it is retired from now on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sipdispatch.api.routekeys import fingerprint

__all__ = [
    "ROTATE_ANNOTATION",
    "STATE_ANNOTATION",
    "KeyRecord",
    "Plan",
    "Policy",
    "plan",
    "read_state",
    "write_state",
]

log = logging.getLogger(__name__)

#: on the Secret: the operator's record of its keys (JSON, fingerprints and times)
STATE_ANNOTATION = "sipdispatch.io/route-keys"
#: on the Secret, set by a user: a value not handled yet asks for a rotation now
ROTATE_ANNOTATION = "sipdispatch.io/rotate-route-keys"


@dataclass(frozen=True)
class Policy:
    """When keys are made, made to sign and removed; times in seconds."""

    #: a new key this long after the signing key began to sign (0: only when asked)
    rotate_every: float
    #: a new key signs this long after it was added (every replica has it by then)
    settle: float
    #: a retired key goes this long after it stopped signing (the proxies' --dialog-lifetime)
    dialog_lifetime: float
    #: the most keys in the list (at least 2: the signing one and a new one)
    max_keys: int


@dataclass(frozen=True)
class KeyRecord:
    """What the annotation says of one key; times are Unix seconds."""

    fingerprint: str
    created: float
    signing_since: float | None = None
    retired: float | None = None

    @property
    def pending(self) -> bool:
        return self.signing_since is None and self.retired is None


@dataclass(frozen=True)
class Plan:
    """The key list to write (signing key first), its records and what changed."""

    keys: tuple[str, ...]
    records: tuple[KeyRecord, ...]
    handled_request: str
    changes: tuple[str, ...]


def plan(
    keys: Sequence[str],
    state: Mapping[str, Any],
    request: str,
    now: float,
    *,
    policy: Policy,
    make_key: Callable[[], str],
) -> Plan:
    """The next state of the key list ``keys`` (as in the Secret, signing key first), given
    the annotation's ``state``, the rotation ``request`` annotation ("" if none) and ``now``.
    ``make_key`` makes a fresh key. An empty ``keys`` gets a first key."""
    known = {record.fingerprint: record for record in _records(state)}
    handled = str(state.get("rotateRequest") or "")
    changes: list[str] = []
    entries = [(key, _adopt(key, index, known, now)) for index, key in enumerate(keys)]
    if not entries:
        key = make_key()
        entries = [(key, KeyRecord(_print(key), created=now, signing_since=now))]
        changes.append(f"made key {_print(key)}, signing")
    signing_since = entries[0][1].signing_since or now
    asked = bool(request) and request != handled
    due = policy.rotate_every > 0 and now - signing_since >= policy.rotate_every
    if (asked or due) and not any(record.pending for _, record in entries):
        key = make_key()
        entries.insert(1, (key, KeyRecord(_print(key), created=now)))
        why = f"asked by {ROTATE_ANNOTATION}={request}" if asked else "due"
        changes.append(f"added key {_print(key)} ({why}); it signs in {policy.settle:g} s")
        if asked:
            handled = request  # asked during a rotation: taken once that one is done
    ready = [i for i, (_, record) in enumerate(entries) if record.pending]
    ready = [i for i in ready if now - entries[i][1].created >= policy.settle]
    if ready:
        newest = max(ready, key=lambda i: entries[i][1].created)
        key, record = entries.pop(newest)
        old_key, old = entries[0]
        entries[0] = (old_key, replace(old, retired=now))
        entries.insert(0, (key, replace(record, signing_since=now)))
        changes.append(f"key {record.fingerprint} signs now, {old.fingerprint} retired")
    kept = []
    for key, record in entries:
        retired = record.retired
        if retired is not None and now - retired >= policy.dialog_lifetime:
            changes.append(f"removed key {record.fingerprint} (retired for the dialog lifetime)")
        else:
            kept.append((key, record))
    while len(kept) > max(policy.max_keys, 2):
        index = min(
            (i for i, (_, record) in enumerate(kept) if record.retired is not None),
            key=lambda i: kept[i][1].retired or 0.0,
        )
        changes.append(f"removed key {kept[index][1].fingerprint} (more than {policy.max_keys})")
        del kept[index]
    return Plan(
        keys=tuple(key for key, _ in kept),
        records=tuple(record for _, record in kept),
        handled_request=handled,
        changes=tuple(changes),
    )


def _print(key: str) -> str:
    return fingerprint(key.encode())


def _adopt(key: str, index: int, known: Mapping[str, KeyRecord], now: float) -> KeyRecord:
    """The record of a key found at ``index``, made to agree with its place in the list."""
    found = known.get(_print(key)) or KeyRecord(_print(key), created=now)
    if index == 0:
        return replace(found, signing_since=found.signing_since or now, retired=None)
    if found.pending and index == 1 and _print(key) in known:
        return found  # added by this operator, not signing yet
    return replace(found, retired=found.retired or now)


def read_state(text: str | None) -> dict[str, Any]:
    """The annotation's JSON ({} when missing or unreadable: the keys are then adopted)."""
    if not text:
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        log.warning("annotation %s is not JSON: the keys are taken as they stand", STATE_ANNOTATION)
        return {}
    return found if isinstance(found, dict) else {}


def write_state(result: Plan) -> str:
    """The annotation's JSON for ``result``: times as RFC 3339, for ``kubectl get -o yaml``."""
    keys = []
    for record in result.records:
        entry = {"fingerprint": record.fingerprint, "created": _stamp(record.created)}
        if record.signing_since is not None:
            entry["signingSince"] = _stamp(record.signing_since)
        if record.retired is not None:
            entry["retired"] = _stamp(record.retired)
        keys.append(entry)
    state: dict[str, Any] = {"keys": keys}
    if result.handled_request:
        state["rotateRequest"] = result.handled_request
    return json.dumps(state, separators=(",", ":"))


def _records(state: Mapping[str, Any]) -> list[KeyRecord]:
    records = []
    for entry in state.get("keys") or []:
        try:
            records.append(
                KeyRecord(
                    fingerprint=str(entry["fingerprint"]),
                    created=_seconds(entry["created"]),
                    signing_since=_optional(entry.get("signingSince")),
                    retired=_optional(entry.get("retired")),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # an entry not understood: its key is adopted as it stands
    return records


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: Any) -> float:
    return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _optional(text: Any) -> float | None:
    return None if text is None else _seconds(text)
