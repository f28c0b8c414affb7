"""What sipdispatch does to API objects, as plain JSON dicts: get, list, server-side apply,
merge patch (of an object or its status subresource), create, replace (optimistic: by
resourceVersion), delete.

A ``Kind`` names a namespaced resource: a built-in one by the generated client's name for it
(``config_map``, ``event``, ``lease``) and its API (``core``, ``coordination``), or a custom
one by group, version and plural.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sipdispatch.kube.client import Kube

__all__ = [
    "CONFIG_MAP",
    "EVENT",
    "LEASE",
    "SECRET",
    "Kind",
    "apply",
    "create",
    "delete",
    "get",
    "list_objects",
    "merge_patch",
    "patch_status",
    "replace",
]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    """A namespaced resource. Built-in kinds: ``core_name`` set, ``api`` the generated
    client's API ("core" for group "")."""

    group: str
    version: str
    plural: str
    core_name: str = ""
    api: str = "core"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def operation(self, verb: str, suffix: str = "") -> tuple[str, str, dict[str, Any]]:
        """(api, method, arguments) of the generated client for ``verb`` on this kind."""
        if self.core_name:
            return self.api, f"{verb}_namespaced_{self.core_name}{suffix}", {}
        custom_verb = "get" if verb == "read" else verb
        arguments = {"group": self.group, "version": self.version, "plural": self.plural}
        return "custom", f"{custom_verb}_namespaced_custom_object{suffix}", arguments


CONFIG_MAP = Kind("", "v1", "configmaps", "config_map")
EVENT = Kind("", "v1", "events", "event")
LEASE = Kind("coordination.k8s.io", "v1", "leases", "lease", api="coordination")
SECRET = Kind("", "v1", "secrets", "secret")


async def _call(
    kube: Kube, kind: Kind, verb: str, suffix: str = "", **arguments: Any
) -> dict[str, Any]:
    api, method, fixed = kind.operation(verb, suffix)
    return dict(await kube.call(api, method, **fixed, **arguments))


async def get(kube: Kube, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
    found = await _call(kube, kind, "read", namespace=namespace, name=name)
    return found


async def list_objects(
    kube: Kube, kind: Kind, namespace: str, **selectors: str
) -> tuple[list[dict[str, Any]], str]:
    """The objects (``field_selector=``, ``label_selector=`` narrow them) and the list's
    resourceVersion, to watch from."""
    found = await _call(kube, kind, "list", namespace=namespace, **selectors)
    version = str((found.get("metadata") or {}).get("resourceVersion") or "")
    return [dict(item) for item in found.get("items") or []], version


async def apply(
    kube: Kube, kind: Kind, body: Mapping[str, Any], *, field_manager: str
) -> dict[str, Any]:
    """Server-side apply of ``body`` (the fields this manager owns, the whole object for a
    sole writer); conflicts with other managers are forced. The object as stored."""
    meta = body["metadata"]
    stored = await _call(
        kube,
        kind,
        "patch",
        namespace=meta["namespace"],
        name=meta["name"],
        body=dict(body),
        field_manager=field_manager,
        force=True,
        _content_type=APPLY_PATCH,
    )
    return stored


async def merge_patch(
    kube: Kube,
    kind: Kind,
    namespace: str,
    name: str,
    patch: Mapping[str, Any],
    *,
    field_manager: str | None = None,
) -> dict[str, Any]:
    """JSON merge patch of the object: ``patch`` replaces what it names (a list as a whole).
    With ``metadata.resourceVersion`` in ``patch``, only if nobody changed the object since
    (409 Conflict otherwise). ``field_manager`` names the writer in managedFields (a person's
    tool, say; the operator's own writes go without). The object as stored."""
    manager = {} if field_manager is None else {"field_manager": field_manager}
    return await _call(
        kube,
        kind,
        "patch",
        namespace=namespace,
        name=name,
        body=dict(patch),
        _content_type=MERGE_PATCH,
        **manager,
    )


async def patch_status(
    kube: Kube, kind: Kind, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    """Merge patch of the status subresource: ``status`` replaces what it names."""
    await _call(
        kube,
        kind,
        "patch",
        "_status",
        namespace=namespace,
        name=name,
        body={"status": dict(status)},
        _content_type=MERGE_PATCH,
    )


async def create(kube: Kube, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return await _call(kube, kind, "create", namespace=namespace, body=dict(body))


async def replace(kube: Kube, kind: Kind, body: Mapping[str, Any]) -> dict[str, Any]:
    """Replace the object; with ``metadata.resourceVersion`` set, only if nobody changed it
    since (409 Conflict otherwise)."""
    meta = body["metadata"]
    return await _call(
        kube, kind, "replace", namespace=meta["namespace"], name=meta["name"], body=dict(body)
    )


async def delete(kube: Kube, kind: Kind, namespace: str, name: str) -> None:
    await _call(kube, kind, "delete", namespace=namespace, name=name)
