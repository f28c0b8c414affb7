"""The routes of a proxy's table, from the ``match`` and ``priority`` of its DispatcherSets.
Pure.

Each set with a match becomes one route to itself, named after the DispatcherSet; routes are
ordered by priority (higher first), then set id. A match that cannot be used is an issue of its
set, naming the field, and that set keeps rendering its last good spec: a ``set:N`` source
naming no set of the proxy, or the same match at the same priority as an older set (which set
takes those requests would depend on set ids nobody chose for that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sipdispatch.dispatch import routespec as _routespec
from sipdispatch.dispatch.configfile import Issue
from sipdispatch.operator.specs import ValidSpec

__all__ = ["describe", "match_issues", "table_routes"]

Named = tuple[str, ValidSpec]  # a DispatcherSet's name and its valid spec


def match_issues(sets: Sequence[Named]) -> dict[str, tuple[Issue, ...]]:
    """What is wrong with each set's match, given all the sets of the proxy (oldest first:
    of two equal matches, the newer one is at fault)."""
    ids = {valid.spec.set_id for _, valid in sets}
    proxy = sets[0][1].spec.proxy if sets else ""
    seen: dict[tuple[int, str], str] = {}
    found: dict[str, tuple[Issue, ...]] = {}
    for name, valid in sets:
        match = valid.spec.match
        if match is None:
            continue
        issues = []
        for j, text in enumerate(match.source):
            source = _routespec.parse_source(text)
            if isinstance(source, int) and source not in ids:
                reason = f"set {source} is not a set of proxy {proxy}"
                issues.append(Issue(("spec", "match", "source", j), reason))
        key = (valid.spec.priority, json.dumps(_dump(match), sort_keys=True))
        if key in seen:
            reason = (
                f"the same match and priority as DispatcherSet {seen[key]}: which set takes "
                "these requests would be ambiguous"
            )
            issues.append(Issue(("spec", "match"), reason))
        else:
            seen[key] = name
        if issues:
            found[name] = tuple(issues)
    return found


def table_routes(sets: Sequence[Named]) -> list[dict[str, Any]]:
    """The ``routes`` of the table: one per set with a match, higher priority first."""
    routed = sorted(
        (s for s in sets if s[1].spec.match is not None),
        key=lambda s: (-s[1].spec.priority, s[1].spec.set_id),
    )
    return [
        {"name": name, "match": _dump(valid.spec.match), "set": valid.spec.set_id}
        for name, valid in routed
        if valid.spec.match is not None
    ]


def describe(valid: ValidSpec | None) -> str | None:
    """Which requests the set takes, in a line for ``kubectl get dset``."""
    if valid is None:
        return None
    match = valid.spec.match
    if match is None:
        return "unmatched"
    parts = []
    if match.source:
        parts.append("from " + ",".join(match.source))
    if match.methods:
        parts.append(",".join(match.methods))
    if match.request_user is not None:
        parts.append(f"user~{match.request_user}")
    if match.request_host is not None:
        parts.append(f"host={match.request_host}")
    if match.header is not None:
        parts.append(f"{match.header.name}~{match.header.regex}")
    return " ".join(parts) or "all"


def _dump(match: _routespec.MatchSpec | None) -> dict[str, Any]:
    if match is None:
        return {}
    result: dict[str, Any] = match.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    return result
