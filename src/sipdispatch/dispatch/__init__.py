"""Pure dispatching decisions: destinations, sets, selection algorithms, health.

No asyncio, sockets or clock here: time is a `now: float` parameter. Modules:

* `tableconfig`  -- `Destination`, `SetConfig`, `TableConfig` (what a table is built from)
* `destinations` -- `DestinationTable` (live snapshot, reload carries health), `Target`
* `algorithms`   -- one `Selector` per Kamailio algorithm (0-13), rendezvous hashing
* `health`       -- states, thresholds, two-letter codes, `apply`, `set_admin_state`
* `latency`      -- round-trip statistics; `weights` -- slot tables; `keys` -- hash keys
* `tablefile`    -- Kamailio `dispatcher.list`; `config`/`configfile` -- YAML model and loader
"""

from sipdispatch.dispatch.algorithms import (
    ALGORITHMS,
    Selector,
    UnknownAlgorithmError,
    make_selector,
    resolve,
)
from sipdispatch.dispatch.config import ProxyConfig
from sipdispatch.dispatch.configfile import ConfigError, load_config, parse_config
from sipdispatch.dispatch.context import RequestContext, SelectionContext
from sipdispatch.dispatch.destinations import (
    DestinationSet,
    DestinationTable,
    Runtime,
    Target,
    UnknownDestinationError,
    UnknownSetError,
)
from sipdispatch.dispatch.health import (
    DestinationDown,
    DestinationUp,
    Event,
    HealthPolicy,
    HealthRecord,
    HealthState,
    InvalidStateError,
    Outcome,
    ProbingMode,
    Result,
    apply,
    set_admin_state,
    wants_probe,
)
from sipdispatch.dispatch.latency import LatencyStats
from sipdispatch.dispatch.tableconfig import (
    DEFAULT_ALGORITHM,
    Destination,
    DestinationError,
    SetConfig,
    TableConfig,
)
from sipdispatch.dispatch.tablefile import TableFileError, load_table_file, parse_table

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "ConfigError",
    "Destination",
    "DestinationDown",
    "DestinationError",
    "DestinationSet",
    "DestinationTable",
    "DestinationUp",
    "Event",
    "HealthPolicy",
    "HealthRecord",
    "HealthState",
    "InvalidStateError",
    "LatencyStats",
    "Outcome",
    "ProbingMode",
    "ProxyConfig",
    "RequestContext",
    "Result",
    "Runtime",
    "SelectionContext",
    "Selector",
    "SetConfig",
    "TableConfig",
    "TableFileError",
    "Target",
    "UnknownAlgorithmError",
    "UnknownDestinationError",
    "UnknownSetError",
    "apply",
    "load_config",
    "load_table_file",
    "make_selector",
    "parse_config",
    "parse_table",
    "resolve",
    "set_admin_state",
    "wants_probe",
]
