"""A DispatcherSet's spec, validated once into what rendering needs. Pure.

The resource's model checks the fields; the proxy's own set model then checks what only a
whole set can break (``hashKey`` without algorithm hash-key, one destination listed twice) on
the destinations already validated, not again. What comes out is the set's static part as
the proxy's model, which rendering completes with the gateways' endpoints. A spec that fails
either check yields issues naming the field (``spec.destinations[1].uri: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sipdispatch.api import models
from sipdispatch.dispatch import config as _config
from sipdispatch.dispatch import tableconfig as _tableconfig
from sipdispatch.dispatch.configfile import Issue, validation_issues
from sipdispatch.operator import endpoints as _endpoints

__all__ = ["ValidSpec", "parse_spec"]


@dataclass(frozen=True, slots=True)
class ValidSpec:
    """A spec the proxy accepts."""

    spec: models.DispatcherSetSpec
    #: the set as the proxy's model: id, algorithm (always written, so that the proxy's
    #: --algorithm default never applies), hashKey, the static destinations
    static: _config.SetSpec
    #: normalised URIs of the static destinations, in their order
    static_ids: tuple[str, ...]
    #: the same as a set: an endpoint at one of them is left to the static destination
    static_keys: frozenset[str]

    @property
    def algorithm(self) -> str:
        return self.static.algorithm or _tableconfig.DEFAULT_ALGORITHM


def parse_spec(data: Mapping[str, Any]) -> tuple[ValidSpec | None, tuple[Issue, ...]]:
    """Validate a DispatcherSet spec, including what only the proxy's set model checks."""
    try:
        spec = models.DispatcherSetSpec.model_validate(dict(data))
        static = _config.SetSpec.model_validate(
            {
                "id": spec.set_id,
                "algorithm": spec.algorithm or _tableconfig.DEFAULT_ALGORITHM,
                "hashKey": spec.hash_key,
                "missingHashKey": spec.missing_hash_key,
                "tls": spec.tls,
                "destinations": spec.destinations,  # validated instances: kept as they are
            }
        )
    except ValidationError as exc:
        return None, tuple(validation_issues(exc, ("spec",)))
    ids = tuple(_endpoints.identity(d.uri) for d in spec.destinations)
    return ValidSpec(spec, static, ids, frozenset(ids)), ()
