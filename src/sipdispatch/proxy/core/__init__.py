"""The sans-I/O proxy core: bytes and ``now`` in, sends and events out.

Its components import one way only, top to bottom (an import contract holds it):

* ``proxy``: the ``Proxy`` facade, which sorts what comes in;
* ``forwarding`` (stateful forwarding, failover, CANCEL) and ``probing`` (OPTIONS probes);
* ``dialogs`` (stateless routing by signed Record-Route and Via) and ``transaction`` (the proxy
  transaction and its branches, with the table of what a response does) and ``affinity``
  (which destination challenged a Call-ID: its retry goes there);
* ``deadlines`` (the timers, and the answers kept for retransmissions);
* ``outbox`` (what one call gives back, and the messages the proxy writes itself);
* ``records`` (settings, hops, selections, sends);
* ``listeners`` (the proxy's sockets: which one a message arrived on or leaves from);
* ``admission`` (the per-source rate limiter and the admission settings);
* ``policy`` (which requests are refused however well formed).
"""

from sipdispatch.proxy.core.dialogs import REFUSALS, Signer, destination_id
from sipdispatch.proxy.core.outbox import Outbox
from sipdispatch.proxy.core.proxy import Proxy
from sipdispatch.proxy.core.records import (
    Address,
    CoreSettings,
    Hop,
    Listener,
    RequestSelection,
    Selection,
    Selector,
    Send,
)

__all__ = [
    "REFUSALS",
    "Address",
    "CoreSettings",
    "Hop",
    "Listener",
    "Outbox",
    "Proxy",
    "RequestSelection",
    "Selection",
    "Selector",
    "Send",
    "Signer",
    "destination_id",
]
