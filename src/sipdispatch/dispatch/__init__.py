"""Pure dispatching decisions: destinations, sets, selection algorithms, health.

No asyncio, sockets or clock here: time is a `now: float` parameter. Modules:

* `tableconfig`  -- `Destination`, `SetConfig`, `TableConfig` (what a table is built from)
* `destinations` -- `DestinationTable` (live snapshot, reload carries health), `Target`
* `algorithms`   -- one `Selector` per Kamailio algorithm (0-13), rendezvous hashing
* `health`       -- states, thresholds, two-letter codes, `apply`, `set_admin_state`
* `latency`      -- round-trip statistics; `weights` -- slot tables; `keys` -- hash keys
* `tablefile`    -- Kamailio `dispatcher.list`; `config`/`configfile` -- YAML model and loader
* `uris`         -- destination URIs, sockets and hosts, on the grammar of `sipdispatch.sip`
* `routes`       -- `RouteTable`: which set takes a request (sources, no hairpin, refusals);
  `routespec` -- its YAML model

Import the modules, not this package: it re-exports nothing, so that importing the
selection and health code does not load the configuration models (pydantic, yaml).
"""
