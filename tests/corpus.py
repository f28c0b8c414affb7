"""The RFC 4475 and RFC 5118 torture messages with their expectations (tests/conformance/)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFORMANCE = Path(__file__).parent / "conformance"


@dataclass(frozen=True)
class TortureMessage:
    rfc: int
    name: str
    data: bytes
    kind: str  # "request" or "response"
    well_formed: bool
    proxy_outcome: str
    response_codes: tuple[int, ...]

    @property
    def outcome(self) -> str:
        """What a proxy does with it: "forward", "reject" or "drop" (first word of the RFC's)."""
        word = self.proxy_outcome.split()[0].strip(",;")
        return {"accept": "forward", "treat": "forward", "process": "forward"}.get(word, word)

    def __str__(self) -> str:
        return f"rfc{self.rfc}/{self.name}"


def _load(rfc: int) -> list[TortureMessage]:
    folder = CONFORMANCE / f"rfc{rfc}"
    spec: dict[str, Any] = json.loads((folder / "expectations.json").read_text())
    out = []
    for entry in spec["messages"]:
        path = folder / entry.get("wire_file", entry["file"])
        out.append(
            TortureMessage(
                rfc=rfc,
                name=entry["file"],
                data=path.read_bytes(),
                kind=entry["kind"],
                well_formed=entry["well_formed"],
                proxy_outcome=entry["proxy_outcome"],
                response_codes=tuple(entry["response_codes"]),
            )
        )
    return out


MESSAGES: list[TortureMessage] = _load(4475) + _load(5118)
