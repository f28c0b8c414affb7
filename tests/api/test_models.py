"""The DispatcherSet spec model: what it accepts and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sipdispatch.api import models

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_names_numbers_and_camel_case_are_accepted() -> None:
    spec = models.DispatcherSetSpec.model_validate(
        {
            "setId": 3,
            "algorithm": 7,
            "hashKey": "X-Queue",
            "gateways": [{"service": "asterisk", "port": "sip", "weight": 2}],
            "drainGraceSeconds": 5,
        }
    )
    assert spec.algorithm == "hash-key"
    assert spec.proxy == models.DEFAULT_PROXY
    assert spec.gateways[0].port == "sip"
    assert spec.drain_grace_seconds == 5


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"setId": 1, "algorithm": "roundrobin"}, "algorithm"),
        ({"setId": -1}, "setId"),
        ({"setId": 1, "gateways": [{"service": "Bad_Name"}]}, "service"),
        ({"setId": 1, "gateways": [{"service": "gw", "port": 70000}]}, "port"),
        ({"setId": 1, "gateways": [{"service": "gw", "transport": "sctp"}]}, "transport"),
        ({"setId": 1, "destinations": [{"uri": "http://x"}]}, "uri"),
        ({"setId": 1, "surprise": True}, "surprise"),
        ({"setId": 1, "drainGraceSeconds": -1}, "drainGraceSeconds"),
    ],
)
def test_nonsense_is_refused_naming_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        models.DispatcherSetSpec.model_validate(spec)
    assert field in str(refused.value)
