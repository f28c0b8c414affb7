"""A DispatcherSet's ``spec.adminStates``: which destinations an operator holds disabled or
draining. Pure.

A hold names a destination by URI (its normalised form, so ``sip:10.1.0.5`` holds
``sip:10.1.0.5:5060``) or by the pod behind a gateway endpoint (the EndpointSlice's
``targetRef``), which follows the pod to a new address. Rendering writes the hold into the
table as the destination's ``disabled`` or ``draining``, so every proxy replica follows it
and a restarted replica reads it again. A hold that names no destination of the set waits
for one to appear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sipdispatch.api import models
from sipdispatch.dispatch import uris as _uris

__all__ = ["Hold", "Holds"]


@dataclass(frozen=True, slots=True)
class Hold:
    """One entry of ``spec.adminStates`` as it applies to a destination."""

    state: str  # disabled or draining
    why: str  # for the status: which entry, and its reason

    @property
    def disabled(self) -> bool:
        return self.state == "disabled"

    @property
    def draining(self) -> bool:
        return self.state == "draining"


class Holds:
    """The holds of one set, looked up by a destination's identity and origin."""

    def __init__(self, entries: Sequence[models.AdminStateSpec]) -> None:
        self._by_uri: dict[str, Hold] = {}
        self._by_pod: dict[str, Hold] = {}
        for index, entry in enumerate(entries):
            why = f"spec.adminStates[{index}]: {entry.state}"
            hold = Hold(entry.state, f"{why} ({entry.reason})" if entry.reason else why)
            if entry.uri is not None:
                # The model has parsed it already: this is its normalised form.
                self._by_uri[str(_uris.parse_sip_uri(entry.uri))] = hold
            elif entry.pod is not None:
                self._by_pod[f"pod/{entry.pod}"] = hold

    def find(self, key: str, origin: str) -> Hold | None:
        """The hold on the destination whose normalised URI is ``key``; one by URI wins over
        one by pod."""
        return self._by_uri.get(key) or self._by_pod.get(origin)
