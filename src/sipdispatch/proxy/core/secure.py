"""The ``sips`` rule (RFC 3261 26.2.2): a request for a SIPS URI travels over TLS on every hop.

A new request whose Request-URI is ``sips:`` is forwarded only to TLS destinations: the others
are left out of its candidates, and with none left it is answered with `STATUS` and `REASON`
instead of going out in clear. (The address a TLS listener Record-Routes with is its own:
``records.Listener.advertise``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sipdispatch.proxy.core.records import CoreSettings, Hop

__all__ = ["REASON", "STATUS", "is_sips", "tls_hops"]

#: the answer to a sips request that no TLS destination can take
STATUS: Final = 503
REASON: Final = "No TLS Destination For SIPS URI"


def is_sips(request_uri: str) -> bool:
    return request_uri[:5].lower() == "sips:"


def tls_hops(hops: Sequence[Hop], settings: CoreSettings) -> list[Hop]:
    """The candidates a sips request may go to: TLS ones, and only with a TLS listener (the
    Via of a TLS hop names it)."""
    if "tls" not in settings.local:
        return []
    return [hop for hop in hops if hop.transport == "tls"]
