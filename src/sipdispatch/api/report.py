"""The DispatcherReport: what one proxy replica says about the destinations it serves.

One model for both planes: the proxy builds a ``DispatcherReportSpec`` and writes
``manifest()`` (``sipdispatch.proxy.reporting``); the operator validates the same model and
folds it into each DispatcherSet's status (``sipdispatch.operator.status``); the CRD's schema
is generated from it. Nothing here does I/O.

Each destination says whether the replica sends it new calls (``eligible``), as the proxy's
own selection decides. The two-letter state does not tell: ``AX`` is both "coming up" (an
inactive destination answering probes, below the success threshold: not eligible) and
"active, not probed" (eligible).

Times are RFC 3339 with milliseconds, as Kubernetes writes them. A report is current for
``STALE_HEARTBEATS`` heartbeats after it was written; an older one is a replica gone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from sipdispatch.api.models import ApiModel, dump
from sipdispatch.api.names import API_VERSION, PROXY_LABEL

__all__ = [
    "KIND",
    "STALE_HEARTBEATS",
    "DispatcherReportSpec",
    "ReportedDestination",
    "parse_timestamp",
    "timestamp",
]

KIND = "DispatcherReport"
STALE_HEARTBEATS = 3.0


def timestamp(when: float) -> str:
    """Unix time as RFC 3339 with milliseconds (``2030-01-01T00:00:00.000Z``)."""
    text = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_timestamp(text: str | None) -> float | None:
    """An RFC 3339 time as Unix time; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ReportedDestination(ApiModel):
    """One destination as one replica sees it."""

    set: int = Field(description="Set id.")
    uri: str = Field(description="SIP URI as in the table.")
    state: str = Field(description="Two-letter state (AP, AX, TP, TX, IP, IX, DX, DR).")
    eligible: bool = Field(
        description="Whether this replica sends new calls here, as its selection decides: "
        "AP, TP, TX and AX when active are; AX while coming up (answering probes, below "
        "the success threshold), IP, IX, DX and DR are not."
    )
    reason: str = Field(default="", description="Why it is in that state.")
    changed_at: str | None = Field(default=None, description="When it last changed (RFC 3339).")
    latency_ms: float | None = Field(
        default=None, description="Estimated round trip in milliseconds, once measured."
    )
    name: str | None = Field(
        default=None,
        description="For an address resolved from a DNS name: the destination as configured "
        "(its name). A name without addresses is one entry of its own, with the name as "
        "uri, state IX and the DNS failure as reason.",
    )


class DispatcherReportSpec(ApiModel):
    """The destination states one proxy replica sees (written by that replica only)."""

    proxy: str = Field(description="Name of the proxy (its table is '<proxy>-table').")
    replica: str = Field(description="The reporting replica (its pod name).")
    table: str = Field(default="", description="resourceVersion of the table it serves.")
    reported_at: str = Field(description="When this report was written (RFC 3339).")
    heartbeat_seconds: float = Field(
        gt=0, description="Reports come at least this often; older ones are stale."
    )
    destinations: list[ReportedDestination] = Field(
        default_factory=list, description="Every destination of the table with its state."
    )

    def expires_at(self) -> float | None:
        """Unix time from which this report is stale (None: its time is unreadable)."""
        reported = parse_timestamp(self.reported_at)
        return None if reported is None else reported + STALE_HEARTBEATS * self.heartbeat_seconds

    def manifest(self, *, name: str, namespace: str, pod_uid: str | None = None) -> dict[str, Any]:
        """The whole DispatcherReport object (an apply patch). With ``pod_uid`` the
        replica's pod owns it, so that Kubernetes removes it with the pod."""
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {PROXY_LABEL: self.proxy},
        }
        if pod_uid:
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": self.replica, "uid": pod_uid}
            ]
        return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": dump(self)}
